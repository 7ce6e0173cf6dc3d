//! SIP dialogs on the UAS side (RFC 3261 §12): identity, route set, CSeq and the BYE we send.

use super::message::{random_token, HeaderAccess, HeaderMissing, Request};
use super::session_timer::SessionTimer;
use super::transport::{ConnectionId, Flow};
use crate::redact::CallToken;
use ezk_sip_types::Name;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Dialog identity as seen from our side (RFC 3261 §12: Call-ID, local tag, remote tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogKey {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (the To tag of requests we receive).
    pub local_tag: String,
    /// Their tag (the From tag of requests we receive).
    pub remote_tag: String,
}

/// Where a dialog stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// INVITE received, not yet answered with a 2xx.
    Early,
    /// 2xx sent, waiting for the ACK.
    Accepted,
    /// ACK received.
    Confirmed,
}

/// One call's dialog.
#[derive(Debug)]
pub struct Dialog {
    /// The call's token.
    pub token: CallToken,
    /// Identity.
    pub key: DialogKey,
    /// State.
    pub state: DialogState,
    /// Whether the peer's address has been verified (ACK or media): the endpoint
    /// counts it among its verified sources while the dialog lives.
    pub verified: bool,
    /// The session timer (RFC 4028), if one was agreed.
    pub session: Option<SessionTimer>,
    /// Whether the peer allows UPDATE (our session refreshes use it).
    pub peer_allows_update: bool,
    /// The To header value of the INVITE (our URI), without our tag.
    local_header: String,
    /// The From header value of the INVITE (their URI and tag).
    remote_header: String,
    /// Remote target: the Contact URI of the INVITE (RFC 3261 §12.1.1).
    remote_target: String,
    /// Route set from Record-Route, in the order received (RFC 3261 §12.1.1 for a UAS).
    route_set: Vec<String>,
    /// First hop if the route set names an IP literal.
    first_hop: Option<SocketAddr>,
    /// Highest CSeq seen from the remote side.
    pub remote_cseq: u32,
    /// Our CSeq for requests we send.
    local_cseq: u32,
    /// How the INVITE came: our requests go back the same way (same connection on a
    /// stream) unless a route says otherwise.
    pub flow: Flow,
    /// o= session id of our SDP.
    pub sdp_session: u64,
    /// o= version of our SDP.
    pub sdp_version: u64,
}

impl Dialog {
    /// Builds the dialog state from the initial INVITE (UAS side).
    pub fn from_invite(
        token: CallToken,
        req: &Request,
        flow: Flow,
    ) -> Result<Dialog, HeaderMissing> {
        let source = flow.remote;
        let call_id = req.call_id()?.to_string();
        let from = req.from()?;
        let remote_tag = from.tag.as_ref().map(|t| t.to_string()).unwrap_or_default();
        let cseq = req.cseq()?.cseq;
        let local_header = req.raw(&Name::TO).ok_or(HeaderMissing("To"))?.to_string();
        let remote_header = req
            .raw(&Name::FROM)
            .ok_or(HeaderMissing("From"))?
            .to_string();
        let remote_target = req
            .contact()
            .map(|u| {
                use ezk_sip_types::print::{AppendCtx, PrintCtx, UriContext};
                u.print_ctx(PrintCtx {
                    method: None,
                    uri: Some(UriContext::ReqUri),
                })
                .to_string()
            })
            // A Contact our own parser would refuse as a Request-URI (e.g. an empty
            // parameter value, `;transport=`) would make our BYE unparseable for a
            // strict peer: use the source address instead.
            .filter(|target| usable_request_uri(target))
            .unwrap_or_else(|| format!("sip:{}", source));
        let route_set = req.record_route();
        let first_hop = req
            .headers
            .get::<Vec<ezk_sip_types::header::typed::Routing>>(Name::RECORD_ROUTE)
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| {
                let hp = &r.uri.uri.host_port;
                hp.ip()
                    .map(|ip| SocketAddr::new(ip, hp.port.unwrap_or(5060)))
            });
        Ok(Dialog {
            token,
            key: DialogKey {
                call_id,
                local_tag: random_token(),
                remote_tag,
            },
            state: DialogState::Early,
            verified: false,
            session: None,
            peer_allows_update: super::session_timer::allows_update(req),
            local_header,
            remote_header,
            remote_target,
            route_set,
            first_hop,
            remote_cseq: cseq,
            local_cseq: rand::random::<u16>() as u32 + 1,
            flow,
            sdp_session: rand::random::<u32>() as u64,
            sdp_version: 1,
        })
    }

    /// Where requests inside this dialog are sent: on a stream, the connection the call
    /// came on (a sips call never leaves TLS); over UDP, the first route or the source.
    pub fn next_hop(&self) -> (SocketAddr, Option<ConnectionId>) {
        match self.flow.connection {
            Some(c) => (self.flow.remote, Some(c)),
            None => (self.first_hop.unwrap_or(self.flow.remote), None),
        }
    }

    /// Builds a BYE for this dialog (RFC 3261 §15.1.1); returns its branch and bytes.
    pub fn build_bye(&mut self, local: SocketAddr) -> (String, Vec<u8>) {
        self.build_request("BYE", local, &[])
    }

    /// Builds an in-dialog request without a body (BYE; UPDATE as a session refresh,
    /// RFC 4028 §10), with `extra` headers; returns its branch and bytes.
    pub fn build_request(
        &mut self,
        method: &str,
        local: SocketAddr,
        extra: &[(&str, String)],
    ) -> (String, Vec<u8>) {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        let branch = format!("z9hG4bK{}", random_token());
        let mut s = String::with_capacity(512);
        let _ = write!(s, "{method} {} SIP/2.0\r\n", self.remote_target);
        let _ = write!(
            s,
            "Via: SIP/2.0/{} {local};branch={branch};rport\r\n",
            self.flow.transport.via_name()
        );
        s.push_str("Max-Forwards: 70\r\n");
        for r in &self.route_set {
            let _ = write!(s, "Route: {r}\r\n");
        }
        let _ = write!(
            s,
            "From: {};tag={}\r\n",
            self.local_header, self.key.local_tag
        );
        let _ = write!(s, "To: {}\r\n", self.remote_header);
        let _ = write!(s, "Call-ID: {}\r\n", self.key.call_id);
        let _ = write!(s, "CSeq: {} {method}\r\n", self.local_cseq);
        for (name, value) in extra {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        s.push_str("User-Agent: sotto\r\nContent-Length: 0\r\n\r\n");
        (branch, s.into_bytes())
    }
}

/// Whether `uri` is accepted as a Request-URI by our own parser.
fn usable_request_uri(uri: &str) -> bool {
    let line = format!("BYE {uri} SIP/2.0\r\n\r\n");
    matches!(
        super::message::parse(bytes::Bytes::from(line), &super::message::Limits::default()),
        Ok(super::message::Message::Request(r)) if r.uri.is_some()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_uris_that_would_not_parse_back_are_not_used_as_targets() {
        assert!(usable_request_uri("sip:alice@10.0.0.2:5070;transport=tcp"));
        assert!(usable_request_uri("sip:alice@10.0.0.2;lr"));
        assert!(!usable_request_uri("sip:alice@10.0.0.2;transport="));
        assert!(!usable_request_uri("tel:+4930123"));
    }
}
