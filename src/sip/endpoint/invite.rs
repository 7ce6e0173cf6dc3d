//! New calls and their INVITE transactions: an initial INVITE becomes a dialog (after
//! the checks, digest and session-timer negotiation), re-INVITEs and CANCEL, the ACK
//! that confirms a dialog (and verifies its source, or brings the answer of an
//! offer-less call), and the application's accept/reject.

use super::*;

impl Endpoint {
    pub(super) fn handle_invite(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let has_to_tag = req.to().map(|t| t.tag.is_some()).unwrap_or(false);
        if has_to_tag {
            self.handle_reinvite(now, flow, key, req);
            return;
        }

        let tx = self.new_invite_server(&req, flow);
        let call = CallToken::random();

        // Calls not yet confirmed by an ACK hold a port and a mixer slot for up to 64·T1:
        // cap them per source and in total, so an INVITE flood cannot exhaust either.
        // A trunk carries many callers from one address: its own limit (counted across
        // its addresses) replaces the per-source one, and raises the total.
        let trunk = self.cfg.trunks.match_source(flow.remote.ip());
        let pending_key = self.pending_key(flow.remote.ip());
        let pending_here = self.pending.get(&pending_key).copied().unwrap_or(0);
        let pending_total: usize = self.pending.values().sum();
        let limit_here = trunk
            .and_then(|t| self.cfg.trunks.get(t))
            .map_or(MAX_PENDING_PER_SOURCE, |t| t.max_calls_in_setup);
        let limit_total = MAX_PENDING_TOTAL + self.cfg.trunks.calls_in_setup();
        if pending_here >= limit_here || pending_total >= limit_total {
            self.counters.overloaded += 1;
            self.reject_new(now, tx, key, call, &req, flow, 503, &[("Retry-After", "5")]);
            return;
        }

        // Extensions we do not support (RFC 3261 §8.2.2.3).
        if let Some(list) = unsupported_requirements(&req) {
            self.reject_new(
                now,
                tx,
                key,
                call,
                &req,
                flow,
                420,
                &[("Unsupported", &list)],
            );
            return;
        }
        // A merged request: the same INVITE reached us twice by different paths.
        let merge_key: Option<MergeKey> = match (req.call_id(), req.from(), req.cseq()) {
            (Ok(id), Ok(from), Ok(cseq)) => Some((
                id.to_string(),
                from.tag.map(|t| t.to_string()).unwrap_or_default(),
                cseq.cseq,
            )),
            _ => None,
        };
        if merge_key
            .as_ref()
            .is_some_and(|k| self.merged.contains_key(k))
        {
            self.reject_new(now, tx, key, call, &req, flow, 482, &[]);
            return;
        }
        let content_type = req.raw(&Name::CONTENT_TYPE).map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        // An INVITE without a body wants our offer in the 2xx and answers in the ACK
        // (RFC 3264 §5); the application sees an empty offer.
        if !req.body.is_empty() && content_type.as_deref() != Some("application/sdp") {
            self.reject_new(
                now,
                tx,
                key,
                call,
                &req,
                flow,
                415,
                &[("Accept", "application/sdp")],
            );
            return;
        }

        if !accepts_sdp(&req) {
            // Our 200 must carry an SDP answer the caller said it cannot read (RFC 3261
            // §21.4.7; RFC 4475 §3.3.15, sdp01).
            self.reject_new(
                now,
                tx,
                key,
                call,
                &req,
                flow,
                406,
                &[("Accept", "application/sdp")],
            );
            return;
        }

        if let Some(creds) = trunk
            .and_then(|t| self.cfg.trunks.get(t))
            .and_then(|t| t.digest.clone())
        {
            let auth = self
                .authenticator
                .get_or_insert_with(|| Authenticator::new(rand::random(), now));
            let values = req.headers.get_raw(&Name::AUTHORIZATION);
            let verdict = auth.verify(
                now,
                flow.remote.ip(),
                &req.method.to_string(),
                values.map(|v| v.as_str()),
                &creds,
            );
            if let Err(e) = verdict {
                if e.is_wrong_credentials() {
                    self.counters.auth_failures += 1;
                    self.events.push_back(Event::AuthFailed {
                        source: Redacted(flow.remote),
                    });
                }
                let challenges = auth.challenges(
                    now,
                    flow.remote.ip(),
                    &creds,
                    e == DigestError::Stale,
                    rand::random(),
                );
                let extra: Vec<(&str, &str)> = challenges
                    .iter()
                    .map(|c| ("WWW-Authenticate", c.as_str()))
                    .collect();
                self.reject_new(now, tx, key, call, &req, flow, 401, &extra);
                return;
            }
        }

        let session = match session_timer::negotiate(&req, now, session_timer::allows_update(&req))
        {
            Negotiation::TooSmall => {
                // RFC 4028 §8.1: our smallest interval, so the caller can try again.
                let min = session_timer::MIN_SE.as_secs().to_string();
                self.reject_new(now, tx, key, call, &req, flow, 422, &[("Min-SE", &min)]);
                return;
            }
            Negotiation::Timer(t) => Some(t),
            Negotiation::None => None,
        };
        let dialog = match Dialog::from_invite(call, &req, flow) {
            Ok(mut d) => {
                d.session = session;
                d
            }
            Err(_) => {
                self.counters.bad_requests += 1;
                self.reject_new(now, tx, key, call, &req, flow, 400, &[]);
                return;
            }
        };
        // No 100 Trying: the application answers within the same turn, far inside the
        // 200 ms of RFC 3261 §17.2.1, and every byte to an unverified source counts.
        let request_user = match req.uri.as_ref().map(|u| &u.user_part) {
            Some(ezk_sip_types::uri::SipUriUserPart::User(u)) => u.to_string(),
            Some(ezk_sip_types::uri::SipUriUserPart::UserPw(u)) => u.user.to_string(),
            _ => String::new(),
        };
        let offer = req.body.clone();
        let cseq = req.cseq().map(|c| c.cseq).unwrap_or(0);
        *self.pending.entry(pending_key).or_insert(0) += 1;
        self.by_key.insert(dialog.key.clone(), call);
        self.dialogs.insert(call, dialog);
        self.invite_of.insert(call, key.clone());
        if let Some(k) = &merge_key {
            self.merged.insert(k.clone(), key.clone());
        }
        self.invites.insert(
            key,
            InviteEntry {
                tx,
                call,
                request: req,
                flow,
                cseq,
                merge_key,
                offerless: offer.is_empty(),
            },
        );
        self.events.push_back(Event::Incoming {
            call,
            offer,
            transport: flow.transport,
            source: Redacted(flow.remote),
            request_user: Redacted(request_user),
            trunk,
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn reject_new(
        &mut self,
        now: Instant,
        mut tx: InviteServer,
        key: TxKey,
        call: CallToken,
        req: &Request,
        flow: Flow,
        code: u16,
        extra: &[(&str, &str)],
    ) {
        let tag = crate::sip::message::random_token();
        if let Ok(bytes) = build_response(req, flow.remote, code, Some(&tag), extra, None) {
            if let Some(t) = tx.send_final(now, code, Bytes::from(bytes)) {
                self.transmits.push_back(t);
            }
        }
        // The transaction is completed: from here on it only retransmits its response
        // and absorbs the ACK, which needs no part of the request. Keeping the parsed
        // request (and the datagram its headers point into) for the 32 s of Timer H
        // is what made an INVITE flood's 503s cost ~3 KiB each; without it ~1 KiB.
        let request = Request {
            method: req.method.clone(),
            uri: None,
            headers: Headers::new(),
            body: Bytes::new(),
            version_supported: req.version_supported,
        };
        self.invites.insert(
            key,
            InviteEntry {
                tx,
                call,
                request,
                flow,
                cseq: req.cseq().map(|c| c.cseq).unwrap_or(0),
                merge_key: None,
                offerless: false,
            },
        );
    }

    pub(super) fn handle_reinvite(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let Some(call) = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied())
        else {
            let tx = self.new_invite_server(&req, flow);
            self.reject_new(now, tx, key, CallToken::random(), &req, flow, 481, &[]);
            return;
        };
        let cseq = req.cseq().map(|c| c.cseq).unwrap_or(0);
        let pending = self
            .invite_of
            .get(&call)
            .and_then(|k| self.invites.get(k))
            .is_some_and(|e| e.tx.state() == InviteServerState::Proceeding);
        let tx = self.new_invite_server(&req, flow);
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        if pending {
            // RFC 3261 §14.2: a second INVITE while one is pending gets 500 + Retry-After.
            self.reject_new(now, tx, key, call, &req, flow, 500, &[("Retry-After", "2")]);
            return;
        }
        if cseq <= dialog.remote_cseq {
            self.reject_new(now, tx, key, call, &req, flow, 500, &[]);
            return;
        }
        if session_timer::negotiate(&req, now, dialog.peer_allows_update) == Negotiation::TooSmall {
            let min = session_timer::MIN_SE.as_secs().to_string();
            self.reject_new(now, tx, key, call, &req, flow, 422, &[("Min-SE", &min)]);
            return;
        }
        dialog.remote_cseq = cseq;
        let offer = req.body.clone();
        self.invite_of.insert(call, key.clone());
        self.invites.insert(
            key,
            InviteEntry {
                tx,
                call,
                request: req,
                flow,
                cseq,
                merge_key: None,
                offerless: offer.is_empty(),
            },
        );
        self.events.push_back(Event::Reinvite {
            call,
            offer,
            transport: flow.transport,
        });
    }

    pub(super) fn handle_ack(&mut self, now: Instant, req: &Request) {
        // ACK for a non-2xx: same branch as the INVITE (RFC 3261 §17.2.3).
        if let Some(key) = TxKey::of(req, &Method::INVITE) {
            if let Some(e) = self.invites.get_mut(&key) {
                if e.tx.state() == InviteServerState::Completed {
                    e.tx.handle_ack(now);
                    return;
                }
            }
        }
        // ACK for a 2xx: its own transaction, matched to the dialog (RFC 3261 §13.3.1.4).
        let Some(call) = Self::dialog_key_of(req).and_then(|k| self.by_key.get(&k).copied()) else {
            return;
        };
        let cseq = req.cseq().map(|c| c.cseq).unwrap_or(0);
        if let Some(k) = self.invite_of.get(&call) {
            if let Some(e) = self.invites.get_mut(k) {
                if e.cseq != cseq {
                    // The ACK of an earlier INVITE (a retransmission): not for this 2xx.
                    return;
                }
                let first_ack = !e.tx.is_acked();
                e.tx.handle_2xx_ack();
                if first_ack && e.offerless {
                    // Our 2xx carried the offer: this ACK carries the answer (once).
                    self.events.push_back(Event::Answer {
                        call,
                        answer: req.body.clone(),
                    });
                }
            }
        }
        let mut newly_confirmed = None;
        if let Some(d) = self.dialogs.get_mut(&call) {
            if d.state == DialogState::Accepted {
                d.state = DialogState::Confirmed;
                newly_confirmed = Some(d.flow.remote.ip());
            }
        }
        if let Some(source) = newly_confirmed {
            self.pending_done(source);
            // The source answered our 2xx: it is who it claims to be (the ACK is our
            // return-routability check), so messages to it are no longer capped.
            self.verify_dialog(call);
        }
        if let Some(pos) = self.bye_after_ack.iter().position(|c| *c == call) {
            self.bye_after_ack.swap_remove(pos);
            self.send_bye(now, call);
        }
    }

    pub(super) fn handle_cancel(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let invite_key = TxKey {
            method: Method::INVITE.to_string(),
            ..key.clone()
        };
        let Some(entry) = self.invites.get_mut(&invite_key) else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        let call = entry.call;
        let proceeding = entry.tx.state() == InviteServerState::Proceeding;
        let tag = self.dialogs.get(&call).map(|d| d.key.local_tag.clone());
        let initial = self
            .dialogs
            .get(&call)
            .is_some_and(|d| d.state == DialogState::Early);
        // RFC 3261 §9.2: the 200 to the CANCEL carries the To tag the 487 will carry.
        self.non_invite_response_tagged(now, key, &req, flow, 200, &[], tag.clone(), None);
        if !proceeding {
            // Already answered: the CANCEL has no effect (RFC 3261 §9.2).
            return;
        }
        if let Some(entry) = self.invites.get_mut(&invite_key) {
            if let Ok(bytes) = build_response(
                &entry.request,
                entry.flow.remote,
                487,
                tag.as_deref(),
                &[],
                None,
            ) {
                if let Some(t) = entry.tx.send_final(now, 487, Bytes::from(bytes)) {
                    self.transmits.push_back(t);
                }
            }
        }
        // Cancelling a re-INVITE ends only that transaction; the call stays.
        if initial && self.remove_dialog(call) {
            self.events.push_back(Event::Cancelled { call });
        }
    }

    /// Answers the pending INVITE or re-INVITE of `call` with 200 OK and this SDP.
    pub fn accept(&mut self, now: Instant, call: CallToken, sdp: &str) {
        if let Some((key, req, flow)) = self.updates.remove(&call) {
            if let Some(s) = self.dialogs.get_mut(&call).and_then(|d| d.session.as_mut()) {
                s.refreshed = now;
            }
            let headers = self.session_headers(call);
            self.answer_update(now, key, &req, flow, 200, &headers, Some(sdp));
            return;
        }
        let Some(key) = self.invite_of.get(&call).cloned() else {
            return;
        };
        let Some((transport, sips)) = self.invites.get(&key).map(|e| {
            let sips = e.request.uri.as_ref().is_some_and(|u| u.sips);
            (e.flow.transport, sips)
        }) else {
            return;
        };
        let local = self.local(transport);
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        let Some(entry) = self.invites.get_mut(&key) else {
            return;
        };
        if entry.tx.state() != InviteServerState::Proceeding {
            return;
        }
        if dialog.state == DialogState::Confirmed {
            // A re-INVITE is a session refresh too, and may change its terms.
            dialog.session =
                match session_timer::negotiate(&entry.request, now, dialog.peer_allows_update) {
                    Negotiation::Timer(t) => Some(t),
                    _ => None,
                };
        }
        if let Some(s) = dialog.session.as_mut() {
            s.refreshed = now;
        }
        let session_headers = dialog
            .session
            .map(|s| s.response_headers())
            .unwrap_or_default();
        // RFC 5630 §3.1.3: a sips dialog gets a sips Contact; otherwise say which
        // transport to come back on.
        let contact = match (sips, transport) {
            (true, _) => format!("<sips:sotto@{local}>"),
            (false, Transport::Udp) => format!("<sip:sotto@{local}>"),
            (false, t) => format!(
                "<sip:sotto@{local};transport={}>",
                t.via_name().to_ascii_lowercase()
            ),
        };
        // Lean on purpose: a 2xx to an unverified UDP source must fit in the budget the
        // INVITE bought (see poll_transmit) with room for its retransmissions, so
        // optional headers stay out.
        let extra = [("Contact", contact.as_str())];
        let mut extra_rr: Vec<(&str, &str)> = extra.to_vec();
        // RFC 3261 §12.1.1: a UAS copies Record-Route into its 2xx.
        let rr: Vec<String> = entry.request.record_route();
        for r in &rr {
            extra_rr.push(("Record-Route", r));
        }
        for (name, value) in &session_headers {
            extra_rr.push((name, value));
        }
        let Ok(bytes) = build_response(
            &entry.request,
            entry.flow.remote,
            200,
            Some(&dialog.key.local_tag),
            &extra_rr,
            Some(("application/sdp", sdp.as_bytes())),
        ) else {
            return;
        };
        if let Some(t) = entry.tx.send_final(now, 200, Bytes::from(bytes)) {
            self.transmits.push_back(t);
        }
        if dialog.state == DialogState::Early {
            dialog.state = DialogState::Accepted;
        }
    }

    /// Refuses the pending INVITE or re-INVITE of `call`. A refused initial INVITE ends the call
    /// (no [`Event::Ended`] follows: the application already knows).
    pub fn reject(&mut self, now: Instant, call: CallToken, code: u16, warning: Option<&str>) {
        if let Some((key, req, flow)) = self.updates.remove(&call) {
            // An UPDATE's offer refused: the session stays as it was (RFC 3311 §5.2).
            self.answer_update(now, key, &req, flow, code, &[], None);
            return;
        }
        let Some(key) = self.invite_of.get(&call).cloned() else {
            return;
        };
        let tag = self.dialogs.get(&call).map(|d| d.key.local_tag.clone());
        let initial = self
            .dialogs
            .get(&call)
            .is_some_and(|d| d.state == DialogState::Early);
        let Some(entry) = self.invites.get_mut(&key) else {
            return;
        };
        let warning = warning.map(|w| format!("399 sotto \"{}\"", w.replace('"', "'")));
        let extra: Vec<(&str, &str)> = warning.iter().map(|w| ("Warning", w.as_str())).collect();
        if let Ok(bytes) = build_response(
            &entry.request,
            entry.flow.remote,
            code,
            tag.as_deref(),
            &extra,
            None,
        ) {
            if let Some(t) = entry.tx.send_final(now, code, Bytes::from(bytes)) {
                self.transmits.push_back(t);
            }
        }
        if initial {
            self.remove_dialog(call);
        }
    }

    pub(super) fn terminate_pending_invite(&mut self, now: Instant, call: CallToken) {
        let tag = self.dialogs.get(&call).map(|d| d.key.local_tag.clone());
        if let Some(k) = self.invite_of.get(&call) {
            if let Some(e) = self.invites.get_mut(k) {
                if e.tx.state() == InviteServerState::Proceeding {
                    if let Ok(b) =
                        build_response(&e.request, e.flow.remote, 487, tag.as_deref(), &[], None)
                    {
                        if let Some(t) = e.tx.send_final(now, 487, Bytes::from(b)) {
                            self.transmits.push_back(t);
                        }
                    }
                }
                e.tx.handle_2xx_ack();
            }
        }
    }
}
