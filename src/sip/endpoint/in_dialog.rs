//! Requests inside a call, both ways: the caller's BYE, INFO (key presses) and UPDATE
//! (session refresh or a new offer); our BYE, our session refresh (UPDATE) and the
//! session timers that decide when either is due (RFC 4028).

use super::*;

impl Endpoint {
    pub(super) fn handle_bye(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let call = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied());
        let Some(call) = call else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        self.non_invite_response(now, key, &req, flow, 200, &[]);
        // A BYE before we answered also ends the pending INVITE (RFC 3261 §15.1.2).
        self.terminate_pending_invite(now, call);
        if self.remove_dialog(call) {
            self.events.push_back(Event::Ended {
                call,
                reason: EndReason::RemoteBye,
            });
        }
    }

    /// INFO inside a call: DTMF relay bodies become [`Event::Dtmf`]; an empty INFO (a
    /// keep-alive some PBXs send) gets 200; other bodies 415.
    pub(super) fn handle_info(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let call = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied());
        let Some(call) = call else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        if req.body.is_empty() {
            self.non_invite_response(now, key, &req, flow, 200, &[]);
            return;
        }
        let content_type = req.raw(&Name::CONTENT_TYPE).unwrap_or_default();
        match info::parse_dtmf(content_type, &req.body) {
            Ok(digit) => {
                self.non_invite_response(now, key, &req, flow, 200, &[]);
                self.events.push_back(Event::Dtmf { call, digit });
            }
            // A body we read but that names no key: acknowledged, nothing happens.
            Err(info::InfoError::NoKey) => self.non_invite_response(now, key, &req, flow, 200, &[]),
            Err(info::InfoError::UnsupportedType) => self.non_invite_response(
                now,
                key,
                &req,
                flow,
                415,
                &[("Accept", "application/dtmf-relay, application/dtmf")],
            ),
        }
    }

    /// UPDATE inside a call (RFC 3311): without a body it refreshes the session timer
    /// (answered at once); with an SDP offer the application answers it through
    /// [`Endpoint::accept`] as it answers a re-INVITE.
    pub(super) fn handle_update(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let call = Self::dialog_key_of(&req).and_then(|k| self.by_key.get(&k).copied());
        let Some(call) = call else {
            self.non_invite_response(now, key, &req, flow, 481, &[]);
            return;
        };
        // A peer that sends UPDATE can take ours: we may be the refresher.
        match session_timer::negotiate(&req, now, true) {
            Negotiation::TooSmall => {
                let min = session_timer::MIN_SE.as_secs().to_string();
                self.non_invite_response(now, key, &req, flow, 422, &[("Min-SE", &min)]);
                return;
            }
            Negotiation::Timer(t) => {
                if let Some(d) = self.dialogs.get_mut(&call) {
                    d.session = Some(t);
                }
            }
            Negotiation::None => {}
        }
        if req.body.is_empty() {
            let headers = self.session_headers(call);
            self.answer_update(now, key, &req, flow, 200, &headers, None);
            return;
        }
        // Glare (RFC 3311 §5.2): our own offer (in the 2xx to an INVITE without one)
        // still waits for its answer, or another offer of theirs for ours.
        let our_offer_open = self
            .invite_of
            .get(&call)
            .and_then(|k| self.invites.get(k))
            .is_some_and(|e| e.offerless && !e.tx.is_acked());
        if our_offer_open || self.updates.contains_key(&call) {
            self.non_invite_response(now, key, &req, flow, 491, &[]);
            return;
        }
        let offer = req.body.clone();
        self.updates.insert(call, (key, req, flow));
        self.events.push_back(Event::Reinvite {
            call,
            offer,
            transport: flow.transport,
        });
    }

    /// Answers an UPDATE (with an SDP answer when it carried an offer).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_update(
        &mut self,
        now: Instant,
        key: TxKey,
        req: &Request,
        flow: Flow,
        code: u16,
        headers: &[(&'static str, String)],
        sdp: Option<&str>,
    ) {
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.non_invite_response_tagged(now, key, req, flow, code, &extra, None, sdp);
    }

    /// The session-timer headers of a 2xx for `call`, if it has a timer.
    pub(super) fn session_headers(&self, call: CallToken) -> Vec<(&'static str, String)> {
        self.dialogs
            .get(&call)
            .and_then(|d| d.session)
            .map(|s| s.response_headers())
            .unwrap_or_default()
    }

    /// Session timers that are due: our refresh goes out (UPDATE, RFC 4028 §10), or a
    /// session whose caller stopped refreshing is ended with BYE.
    pub(super) fn on_session_timers(&mut self, now: Instant) {
        let due: Vec<(CallToken, Refresher)> = self
            .dialogs
            .iter()
            .filter_map(|(c, d)| {
                let s = d.session?;
                (s.deadline() <= now && d.state == DialogState::Confirmed)
                    .then_some((*c, s.refresher))
            })
            .collect();
        for (call, refresher) in due {
            match refresher {
                Refresher::Uac => self.end_expired(now, call),
                Refresher::Uas => self.send_refresh(now, call),
            }
        }
    }

    /// Sends our session refresh: an UPDATE without a body.
    pub(super) fn send_refresh(&mut self, now: Instant, call: CallToken) {
        let Some(transport) = self.dialogs.get(&call).map(|d| d.flow.transport) else {
            return;
        };
        let local = self.local(transport);
        let Some(dialog) = self.dialogs.get_mut(&call) else {
            return;
        };
        let Some(session) = dialog.session.as_mut() else {
            return;
        };
        // Counted from now: the next one is due half an interval on, whatever the
        // answer; a failed one ends the call.
        session.refreshed = now;
        let headers = [
            (
                "Session-Expires",
                format!("{};refresher=uas", session.interval.as_secs()),
            ),
            ("Supported", SUPPORTED.to_string()),
        ];
        let (branch, bytes) = dialog.build_request("UPDATE", local, &headers);
        let (dest, connection) = dialog.next_hop();
        let verified = if dialog.verified && connection.is_none() {
            Self::dialog_peers(dialog)
        } else {
            Vec::new()
        };
        for ip in &verified {
            // Kept verified while the refresh runs, like a BYE's.
            self.reflection.verify(*ip);
        }
        let (client, first) = NonInviteClient::new(
            now,
            Transmit {
                dest,
                connection,
                bytes: Bytes::from(bytes),
            },
            transport.is_reliable(),
            self.cfg.timers,
        );
        self.transmits.push_back(first);
        self.clients
            .insert(branch, (client, verified, ClientPurpose::Refresh(call)));
    }

    /// Ends a call whose session timer ran out (RFC 4028 §10): BYE, and the
    /// application hears of it.
    pub(super) fn end_expired(&mut self, now: Instant, call: CallToken) {
        if !self.dialogs.contains_key(&call) {
            return;
        }
        self.send_bye(now, call);
        self.events.push_back(Event::Ended {
            call,
            reason: EndReason::SessionExpired,
        });
    }

    /// Ends `call` from our side: BYE once the dialog allows it. No [`Event::Ended`] follows.
    pub fn hangup(&mut self, now: Instant, call: CallToken) {
        let Some(state) = self.dialogs.get(&call).map(|d| d.state) else {
            return;
        };
        match state {
            DialogState::Early => {
                self.reject(now, call, 480, None);
            }
            DialogState::Accepted => {
                let acked = self
                    .invite_of
                    .get(&call)
                    .and_then(|k| self.invites.get(k))
                    .is_none_or(|e| e.tx.is_acked());
                if acked {
                    self.send_bye(now, call);
                } else if !self.bye_after_ack.contains(&call) {
                    // RFC 3261 §15: no BYE before the ACK or the 2xx's timeout.
                    self.bye_after_ack.push(call);
                }
            }
            DialogState::Confirmed => self.send_bye(now, call),
        }
    }

    pub(super) fn send_bye(&mut self, now: Instant, call: CallToken) {
        // A re-INVITE still waiting for our answer gets its 487 before the call goes.
        self.terminate_pending_invite(now, call);
        let Some(mut dialog) = self.dialogs.remove(&call) else {
            return;
        };
        self.by_key.remove(&dialog.key);
        self.invite_of.remove(&call);
        self.updates.remove(&call);
        self.bye_after_ack.retain(|c| *c != call);
        if dialog.state != DialogState::Confirmed {
            self.pending_done(dialog.flow.remote.ip());
        }
        // The source stays verified until our BYE's transaction ends (retransmissions).
        let verified = if dialog.verified {
            Self::dialog_peers(&dialog)
        } else {
            Vec::new()
        };
        let local = self.local(dialog.flow.transport);
        let (branch, bytes) = dialog.build_bye(local);
        let (dest, connection) = dialog.next_hop();
        let (client, first) = NonInviteClient::new(
            now,
            Transmit {
                dest,
                connection,
                bytes: Bytes::from(bytes),
            },
            dialog.flow.transport.is_reliable(),
            self.cfg.timers,
        );
        self.transmits.push_back(first);
        self.clients
            .insert(branch, (client, verified, ClientPurpose::Bye));
    }

    pub(super) fn remove_dialog(&mut self, call: CallToken) -> bool {
        self.invite_of.remove(&call);
        self.updates.remove(&call);
        self.bye_after_ack.retain(|c| *c != call);
        match self.dialogs.remove(&call) {
            Some(d) => {
                self.by_key.remove(&d.key);
                if d.verified {
                    for ip in Self::dialog_peers(&d) {
                        self.reflection.unverify(ip);
                    }
                }
                if d.state != DialogState::Confirmed {
                    self.pending_done(d.flow.remote.ip());
                }
                true
            }
            None => false,
        }
    }
}
