//! The SIP torture messages of RFC 4475 and RFC 5118 against the sans-IO UAS core.
//!
//! Each message in `tests/data/rfc4475/` and `tests/data/rfc5118/` (byte-exact copies of
//! the RFCs' archives, see `tests/data/README.md`) goes into a fresh
//! [`sotto::sip::endpoint::Endpoint`] as a UDP datagram; what the endpoint sends and
//! reports is compared with what the RFC asks of a UAS, as written in [`CASES`]. The same
//! bytes then go through stream framing ([`sotto::sip::framing::check`]) and, once framed,
//! through a TCP flow. Nothing may panic anywhere, not even inside the endpoint's
//! `catch_unwind`: a panic hook counts them.
//!
//! Where the endpoint departs from the RFC, the case is listed in [`KNOWN_FAILURES`] with
//! the reason; the test then asserts that the departure is still there, so that whoever
//! fixes it is told to move the case back into the table.

use bytes::Bytes;
use sotto::sip::endpoint::{Endpoint, EndpointConfig, Event};
use sotto::sip::framing::{check, Frame};
use sotto::sip::message::{build_response, parse, HeaderAccess, Limits, Message, Response};
use sotto::sip::transaction::{Timers, Transmit};
use sotto::sip::transport::{ConnectionId, Flow, Transport};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Instant;

// ---- the corpus --------------------------------------------------------------------------

/// Which RFC a message comes from (and so which folder holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rfc {
    /// RFC 4475, `tests/data/rfc4475/<name>.dat`.
    Torture,
    /// RFC 5118, `tests/data/rfc5118/<name>`.
    Ipv6,
}

/// What a UAS did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Taken as a request the UAS serves: an INVITE reported as `Event::Incoming` (after a
    /// 100), any other method answered 2xx.
    Accepted,
    /// Refused with this final status.
    Response(u16),
    /// Nothing sent, nothing reported.
    Dropped,
    /// Something else (e.g. only a provisional with no event): never expected.
    Odd,
}

/// What the RFC allows a UAS to do with one message.
#[derive(Debug, Clone, Copy)]
enum Expect {
    One(Outcome),
    AnyOf(&'static [Outcome]),
}

impl Expect {
    fn allows(self, outcome: Outcome) -> bool {
        match self {
            Expect::One(o) => o == outcome,
            Expect::AnyOf(all) => all.contains(&outcome),
        }
    }
}

use Outcome::{Accepted, Dropped, Response as Status};

const fn one(o: Outcome) -> Expect {
    Expect::One(o)
}

/// One torture message and what a UAS must do with it.
struct Case {
    rfc: Rfc,
    /// The RFC's name for it (the file name).
    name: &'static str,
    /// The RFC section that describes it.
    section: &'static str,
    /// What this bridge, as a UAS, must do with it.
    expect: Expect,
}

const fn case(rfc: Rfc, name: &'static str, section: &'static str, expect: Expect) -> Case {
    Case {
        rfc,
        name,
        section,
        expect,
    }
}

use Rfc::{Ipv6, Torture};

/// Every message, in RFC order, with the outcome the RFC asks of a UAS. This bridge is a
/// UAS for INVITE, ACK, BYE, CANCEL and OPTIONS only: other known methods get 405, unknown
/// ones 501 (RFC 3261 §8.2.1), and a response that matches none of its transactions is
/// dropped (§17.1.3, §18.1.2).
const CASES: &[Case] = &[
    // ---- RFC 4475 §3.1.1: valid messages; they must parse ----
    // Well formed, but its To has a tag and no dialog has it: 481 (RFC 3261 §12.2.2).
    case(Torture, "wsinv", "3.1.1.1", one(Status(481))),
    // "Endpoints will generate a 501 listing the methods they understand in an Allow."
    case(Torture, "intmeth", "3.1.1.2", one(Status(501))),
    // A new INVITE with an SDP offer: the call comes up.
    case(Torture, "esc01", "3.1.1.3", one(Accepted)),
    // A REGISTER: well formed, but this bridge is no registrar (RFC 4475 §3.3.7: 405).
    case(Torture, "escnull", "3.1.1.4", one(Status(405))),
    // "An endpoint would reject this message with a 501."
    case(Torture, "esc02", "3.1.1.5", one(Status(501))),
    case(Torture, "lwsdisp", "3.1.1.6", one(Accepted)),
    // Well formed: long values and 34 Via values must be accepted; an INVITE with SDP.
    case(Torture, "longreq", "3.1.1.7", one(Accepted)),
    // The REGISTER is handled (405 here), the INVITE-looking trailing octets ignored.
    case(Torture, "dblreq", "3.1.1.8", one(Status(405))),
    case(Torture, "semiuri", "3.1.1.9", one(Accepted)),
    case(Torture, "transports", "3.1.1.10", one(Accepted)),
    // MESSAGE: a known method this bridge does not implement.
    case(Torture, "mpart01", "3.1.1.11", one(Status(405))),
    // Responses that match no transaction of ours: dropped.
    case(Torture, "unreason", "3.1.1.12", one(Dropped)),
    case(Torture, "noreason", "3.1.1.13", one(Dropped)),
    // ---- RFC 4475 §3.1.2: invalid messages ----
    // "This message is syntactically invalid. An element receiving this request should
    // respond with a 400"; the Via itself is the broken part, so a UAS that cannot read
    // where to send the 400 may drop it. Taking it as a call is wrong.
    case(
        Torture,
        "badinv01",
        "3.1.2.1",
        Expect::AnyOf(&[Status(400), Dropped]),
    ),
    // Over UDP: "a 400 Bad Request response SHOULD be sent" (RFC 3261 §18.3); this
    // bridge drops what it cannot frame: a body it never got is nothing to answer.
    case(
        Torture,
        "clerr",
        "3.1.2.2",
        Expect::AnyOf(&[Status(400), Dropped]),
    ),
    // "should respond with an error ... over UDP the remainder can simply be discarded".
    case(
        Torture,
        "ncl",
        "3.1.2.3",
        Expect::AnyOf(&[Status(400), Dropped]),
    ),
    // Overlarge CSeq, Max-Forwards, Expires: "should respond with a 400".
    case(Torture, "scalar02", "3.1.2.4", one(Status(400))),
    // A response: "simply discard"; nothing to answer.
    case(Torture, "scalarlg", "3.1.2.5", one(Dropped)),
    // Unterminated quoted string: "should return a 400 ... An element could attempt to
    // infer a terminating quote and accept the message."
    case(
        Torture,
        "quotbal",
        "3.1.2.6",
        Expect::AnyOf(&[Status(400), Accepted]),
    ),
    // Malformed Request-URI: "should respond with a 400"; an unparseable start line is
    // dropped by design (src/sip/message.rs), as for any datagram it cannot read.
    case(
        Torture,
        "ltgtruri",
        "3.1.2.7",
        Expect::AnyOf(&[Status(400), Dropped]),
    ),
    // "should respond with a 400 ... could attempt to ignore the embedded LWS": read
    // liberally it is an INVITE with a To tag and no such dialog, so 481.
    case(
        Torture,
        "lwsruri",
        "3.1.2.8",
        Expect::AnyOf(&[Status(400), Dropped, Status(481)]),
    ),
    // "acceptable to reject ... may ignore these extra SP characters".
    case(
        Torture,
        "lwsstart",
        "3.1.2.9",
        Expect::AnyOf(&[Status(400), Dropped, Accepted]),
    ),
    case(
        Torture,
        "trws",
        "3.1.2.10",
        Expect::AnyOf(&[Status(400), Dropped, Accepted]),
    ),
    // "This INVITE is malformed, as the SIP Request-URI contains a URI-header component.
    // An element receiving this request should respond with a 400 Bad Request."
    case(Torture, "escruri", "3.1.2.11", one(Status(400))),
    // A non-GMT Date: 400, or be liberal and ignore it (a UAS does not need the Date).
    case(
        Torture,
        "baddate",
        "3.1.2.12",
        Expect::AnyOf(&[Status(400), Accepted]),
    ),
    // A REGISTER with a bad Contact: 400 (the Contact) or 405 (the method); a UAS that is
    // no registrar never needs to read the Contact.
    case(
        Torture,
        "regbadct",
        "3.1.2.13",
        Expect::AnyOf(&[Status(400), Status(405)]),
    ),
    // "reasonable ... to respond with a 400", or be liberal.
    case(
        Torture,
        "badaspec",
        "3.1.2.14",
        Expect::AnyOf(&[Status(400), Accepted]),
    ),
    // Same, and the archive's copy also lacks the blank line that ends the header
    // section, so dropping it as truncated is as right.
    case(
        Torture,
        "baddn",
        "3.1.2.15",
        Expect::AnyOf(&[Status(400), Accepted, Dropped]),
    ),
    // "The element should respond with a 505 Version Not Supported."
    case(Torture, "badvers", "3.1.2.16", one(Status(505))),
    // OPTIONS with a CSeq of INVITE: 400.
    case(Torture, "mismatch01", "3.1.2.17", one(Status(400))),
    // "should respond with a 501 ... A 400 Bad Request is also acceptable".
    case(
        Torture,
        "mismatch02",
        "3.1.2.18",
        Expect::AnyOf(&[Status(501), Status(400)]),
    ),
    // A response with a code over 2^32: dropped.
    case(Torture, "bigcode", "3.1.2.19", one(Dropped)),
    // ---- RFC 4475 §3.2: transaction layer ----
    // Branch is only the magic cookie: 400, or the RFC 2543 matching rules; either way an
    // OPTIONS the UAS answers.
    case(
        Torture,
        "badbranch",
        "3.2.1",
        Expect::AnyOf(&[Status(400), Accepted]),
    ),
    // ---- RFC 4475 §3.3: application layer ----
    // No Call-ID, From, To, Max-Forwards: 400 (the Via and CSeq are there to answer).
    case(Torture, "insuf", "3.3.1", one(Status(400))),
    case(Torture, "unkscm", "3.3.2", one(Status(416))),
    // soap.beep is a scheme this bridge will never serve: "appropriate to ... return 416".
    case(Torture, "novelsc", "3.3.3", one(Status(416))),
    // A registrar would 400 the non-SIP To; this UAS is no registrar: 405 is as right.
    case(
        Torture,
        "unksm2",
        "3.3.4",
        Expect::AnyOf(&[Status(400), Status(405)]),
    ),
    // 420 listing the Require tags; Proxy-Require is for proxies (checked below too).
    case(Torture, "bext01", "3.3.5", one(Status(420))),
    // "An endpoint receiving this request would reject it with a 415".
    case(Torture, "invut", "3.3.6", one(Status(415))),
    // "Endpoints choosing not to act as registrars will simply reject the request. A 405
    // Method Not Allowed is appropriate."
    case(Torture, "regaut01", "3.3.7", one(Status(405))),
    // Several Call-ID, CSeq, To, From, Max-Forwards: "respond with a 400 Bad Request".
    case(Torture, "multi01", "3.3.8", one(Status(400))),
    // Two Content-Length values: over UDP answer with an error or discard.
    case(
        Torture,
        "mcl01",
        "3.3.9",
        Expect::AnyOf(&[Status(400), Dropped]),
    ),
    // A 200 whose second Via is a broadcast address: a UAS "should simply discard it".
    case(Torture, "bcast", "3.3.10", one(Dropped)),
    // "An endpoint should process the request as if the Max-Forwards field value were
    // still positive." 483 is a proxy's answer (RFC 3261 §16.3), not a UAS's; this bridge
    // answers 483 on purpose (see KNOWN_FAILURES).
    case(Torture, "zeromf", "3.3.11", one(Accepted)),
    // §3.3.12 to §3.3.14 are for registrars; an endpoint that is none answers 405.
    case(Torture, "cparam01", "3.3.12", one(Status(405))),
    case(Torture, "cparam02", "3.3.13", one(Status(405))),
    case(Torture, "regescrt", "3.3.14", one(Status(405))),
    // Its Accept excludes application/sdp, so no answer can be sent in the 2xx: "the
    // endpoint ... should respond with a 406 Not Acceptable".
    case(Torture, "sdp01", "3.3.15", one(Status(406))),
    // ---- RFC 4475 §3.4: backward compatibility ----
    // RFC 2543 syntax "should be accepted by RFC 3261 elements that want to maintain
    // backwards compatibility". It has no Contact, so a UAS has no remote target for the
    // dialog (RFC 3261 §12.1.1) and no way to send its BYE: refusing it with 400 is as
    // defensible for a bridge that must be able to hang up.
    case(
        Torture,
        "inv2543",
        "3.4.1",
        Expect::AnyOf(&[Accepted, Status(400)]),
    ),
    // ---- RFC 5118 (fed in wire form, see `wire`) ----
    // REGISTER with an IPv6 reference: well formed; 405 from a UAS that is no registrar.
    case(Ipv6, "ipv6-good", "4.1", one(Status(405))),
    // Request-URI with an undelimited IPv6 address: "should respond with a 400"; an
    // unparseable start line is dropped by design.
    case(
        Ipv6,
        "ipv6-bad",
        "4.2",
        Expect::AnyOf(&[Status(400), Dropped]),
    ),
    case(Ipv6, "port-ambiguous", "4.3", one(Status(405))),
    case(Ipv6, "port-unambiguous", "4.4", one(Status(405))),
    // A BYE outside any dialog: 481; the Via's received= with brackets must parse.
    case(
        Ipv6,
        "via-received-param-with-delim",
        "4.5",
        one(Status(481)),
    ),
    case(Ipv6, "via-received-param-no-delim", "4.5", one(Accepted)),
    case(Ipv6, "ipv6-in-sdp", "4.6", one(Accepted)),
    case(Ipv6, "mult-ip-in-header", "4.7", one(Status(481))),
    case(Ipv6, "mult-ip-in-sdp", "4.8", one(Accepted)),
    case(Ipv6, "ipv4-mapped-ipv6", "4.9", one(Accepted)),
    // "an implementation must tolerate both of the above constructs".
    case(Ipv6, "ipv6-bug-abnf-3-colons", "4.10", one(Accepted)),
    case(Ipv6, "ipv6-correct-abnf-2-colons", "4.10", one(Accepted)),
];

/// Cases where the endpoint does not do what [`CASES`] says: the name, what it does
/// instead, and why. Each is a bug (or a deliberate departure) to be fixed in `src/`; the
/// test asserts that it still does exactly this, so a fix (or any change) means editing
/// or deleting its line here.
const KNOWN_FAILURES: &[(&str, Outcome, &str)] = &[(
    "zeromf",
    Status(483),
    "§3.3.11: deliberate. An OPTIONS to us with Max-Forwards 0 is answered 483 Too Many \
     Hops, because the SIP-core issue asks for exactly that (docs/architecture.md; \
     tests/sip_endpoint.rs `max_forwards_zero_gets_483`): a request that reaches the bridge \
     with 0 has passed a loop or a hop that does not count, and refusing it ends the loop \
     where it shows. RFC 4475 prefers that an endpoint serve it as if the value were \
     still positive; 483 is what RFC 3261 §16.3 has a proxy answer.",
)];

/// Valid messages (RFC 4475 §3.1.1, RFC 5118 except §4.2) whose parse → build a response
/// → parse round trip fails, and why.
const KNOWN_ROUNDTRIP_FAILURES: &[(&str, &str)] = &[];

/// Framing departures: (name, what `framing::check` does instead of what it should).
const KNOWN_FRAMING_FAILURES: &[(&str, &str)] = &[];

/// SHA-256 of each file, as published for the RFC archives (see tests/data/README.md):
/// the files must stay byte for byte what the RFCs ship.
const EXPECTED_SHA256: &[(&str, &str)] = &[
    (
        "wsinv",
        "d6f6cdee99cd0a1f8e3d9a0fdd67c877700e19ab86d8186dada06f61260e3e61",
    ),
    (
        "intmeth",
        "b957a8292c1c0a9851fe94705b90f94320738f43aacde64998e401f742ef688d",
    ),
    (
        "esc01",
        "be3a316d4ce5f69cad474646191e390dd4b50fc8371e44b5197fe1237781973e",
    ),
    (
        "escnull",
        "263fe2ecd12a5ccbb6c67b3174e9211d11da9b600e7d69666a86d2ee42873e90",
    ),
    (
        "esc02",
        "9a9c59449f00327b02071feafc8e5c2a261c98c818044167894cc17809a12199",
    ),
    (
        "lwsdisp",
        "d1b36b6316c12824f6f04bf6b1fd1f021cade9b74871693b9c3474cd9fa7f4e6",
    ),
    (
        "longreq",
        "185739292bc676760e5b1cca77c87705aa570240171c506ad76f8c35af0ecdaa",
    ),
    (
        "dblreq",
        "a6be48426565c2a705389c4ce2ea17e57b891cb13f80490a2cb9392c797b46ef",
    ),
    (
        "semiuri",
        "87bbaed6b4b354dbd3c5c7a20e66686303c63e43a0aa19b89de1ac75231611a2",
    ),
    (
        "transports",
        "33b4553a3b9418121b099ff07882535151edd6a1e81898c63a916aad2cbf90bc",
    ),
    (
        "mpart01",
        "92147c8e24997bac59629e1b163767697d0d6d499af87f89e325d69968bec3ba",
    ),
    (
        "unreason",
        "4f939d6ebf4817eea70f011d3209e83732872ffc20ffd304b244084dc392f4d7",
    ),
    (
        "noreason",
        "07e11e470a69fffa3674de805e5165d1351a9439a91045ee70c9570ea24ab4fe",
    ),
    (
        "badinv01",
        "9ee2b88f2e0b5a9eeb9bf729b6177f0a0c7d0b5e6c84be593e0480d7962f3ab8",
    ),
    (
        "clerr",
        "d9da629086a38df433438fb0fb19a8730f34516f049a5520dd0cac3285485290",
    ),
    (
        "ncl",
        "7ea6538edc1f054fdb6cd1c821040460cffca3cb682fa2e8e2a502d92170b4c2",
    ),
    (
        "scalar02",
        "53158177326568e9964bce5dcfac27a2bf8a90953bbc03f6c5e2775864a97e4b",
    ),
    (
        "scalarlg",
        "0957eca31737e3592eb1418bb41e9f5219278a78ff420111620d7fb60175b551",
    ),
    (
        "quotbal",
        "e61978a2ea359fc666f0336fe4dbc623447532280e3273ea98119b3d3f788c84",
    ),
    (
        "ltgtruri",
        "bcacb2dc17610e8cc8f9b8b0e3d6ee65ab473f93787a03bbd33579e1cea473df",
    ),
    (
        "lwsruri",
        "3e22ceeca585ad23cc180208e2dad94e0a5aa4bb877a61cac443aa927f758b9e",
    ),
    (
        "lwsstart",
        "f884e5626c6c5b1210cfc4a3540b8a28bd52939cff092f3f0c5c971e032adb0e",
    ),
    (
        "trws",
        "64ae20694026e28c10746b57386b7fd1276de02b6f8d42d418070e87d6f4499f",
    ),
    (
        "escruri",
        "c3cf30af13a9d107829cc105effd79355f1139c6ecc683a048b4c27951f8f416",
    ),
    (
        "baddate",
        "1208a6e3e0c8a8c33a06a1f3733d158413cb72e58c379d094c4ecea11e9d4c28",
    ),
    (
        "regbadct",
        "575d27530275814c1c98be164808fac89a0e2b4fc899dadcd97e6ba499437bda",
    ),
    (
        "badaspec",
        "f8f6e2f4247287b0be6adb5ac222a6db4759395e44d27d2ddb9b39393e94867e",
    ),
    (
        "baddn",
        "9d9428e8017092f194ec11077ba6865c251308cdfd7fd9db6a993b28e5748951",
    ),
    (
        "badvers",
        "037d702d19e934bfeebbd2609050d7d54928d590cf90c78f3914522771dd8e03",
    ),
    (
        "mismatch01",
        "a2c285636e451e75420da0cc62ee55ca3e398827008418befbfb078726bf0793",
    ),
    (
        "mismatch02",
        "01b287f9a9c492f7f57405c36c8a2af0e2393896ed2d25fb92b502f2a6722bc4",
    ),
    (
        "bigcode",
        "f79450070975da54c3525c9a5cbe75bae3c9d8cb92eba609772c26f66f225c2e",
    ),
    (
        "badbranch",
        "cb049c727f16b5ec49e822f9e8b7d0ee20ca2d20ffb50baecd0b411a5e64fa7d",
    ),
    (
        "insuf",
        "1e3efd9f3b238c6351ba12bc7eb46d843f2761b5d4a6b82b63bffdf07f2c5aee",
    ),
    (
        "unkscm",
        "81be1a6a566c7ab52fe1c58c4a75440dfd697ad04c5e09fa71340de7da7b8bbb",
    ),
    (
        "novelsc",
        "9a50a7343fcf685e77c4d0f477138a28f32a41c75aa566d200f3df210b01e648",
    ),
    (
        "unksm2",
        "f6914409ced613ef5eb56e264d2f096dac26ab9e397d6a638934d2027f1f6acb",
    ),
    (
        "bext01",
        "57181987c02c4f5752b7aa8c2847311f6184216ce7621e40303015949e70761c",
    ),
    (
        "invut",
        "9b39e824947df46f90f824cd308fb3c118f548d94637f581101e355b381a0d92",
    ),
    (
        "regaut01",
        "885ba0488872cfc04a3c7622854b8381955a5ee890745d6010834e3731a73faa",
    ),
    (
        "multi01",
        "d156ab12105b4bfd8a6498de6f7195087058162b8cda1606169855b722411791",
    ),
    (
        "mcl01",
        "887191619bf003b7e87399200b5cf4c3b5397344dbf70288ad5e23bd157b7fe4",
    ),
    (
        "bcast",
        "073637c63597199179cf5fc91b980b2d530c066a0048ea3b908772def57b4c36",
    ),
    (
        "zeromf",
        "50954ef47acca4f9f5263ded06246d06dee4e2ee508a8d284191795d7fddf365",
    ),
    (
        "cparam01",
        "dfa6b5cdb289adc694b9b7e103ebfa7a2167335c46e5dc9de67055021910ae1c",
    ),
    (
        "cparam02",
        "e93574215bd1d804bb46cc15ca6176b567def7ea1b15f72ab2c2dcf598af465a",
    ),
    (
        "regescrt",
        "dab4087c133348b06fd7b3c4c7ef15094f8754e265e4e8c2137bb3ecda2ef477",
    ),
    (
        "sdp01",
        "497c5f1ced6c7b579b48075e2dca919ce9b819a735964128a6e744a3a0b9e57f",
    ),
    (
        "inv2543",
        "76fac8afe22dee49ea696b511621946694897ac7030fc5d07f57c8b487ce0521",
    ),
    (
        "ipv6-good",
        "80654d05559d5bda7d584b39e0f4dbf69b23189cb140754ef889a4996a3505ed",
    ),
    (
        "ipv6-bad",
        "f6ffa0b2e664d05dbecde6bd7eb6fd71a9f01d43a3a0d3e084766c6240be4972",
    ),
    (
        "port-ambiguous",
        "e1925cfd89436c36025fd21d144b7788cb988bfd752498cf767e3303426f2e7d",
    ),
    (
        "port-unambiguous",
        "be3a4dbac87b1cdabde97595d117773e3864ffd2ff7ab645bfd5773e280bcd4e",
    ),
    (
        "via-received-param-with-delim",
        "568255f70f186f7d09fe437a662bb32a7b14285c5243222a1a401004b7e6ba80",
    ),
    (
        "via-received-param-no-delim",
        "45f233fd536e7d4d9f47be5098992cd912394a80460dd6b16979f61a713b9dd9",
    ),
    (
        "ipv6-in-sdp",
        "c09ab30a92e790ecd261aadbb3876f8043307bffec3103f5add052d64a125532",
    ),
    (
        "mult-ip-in-header",
        "ace698f6827e940812cfe26c48960f9069b02291b0022b0777cf00f37405f83a",
    ),
    (
        "mult-ip-in-sdp",
        "c50fb1a29fdf4f0c3c12cf9cf5b490df1bb86d6dfacf7bc807e2c3e7e8660013",
    ),
    (
        "ipv4-mapped-ipv6",
        "b3d7df025b6465461741c3788fa3b48af25b08d6a2fdb59ded815cc0afc04a68",
    ),
    (
        "ipv6-bug-abnf-3-colons",
        "e542604dca3aed5c346a549c1f692aecf98a12353b38283be3e199664abeb43e",
    ),
    (
        "ipv6-correct-abnf-2-colons",
        "6a8c09976009aab0159cf1b8cc3e2964b3853557102b5b86bf2b6b2c48c0779e",
    ),
];

fn path(c: &Case) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    match c.rfc {
        Torture => dir.join("rfc4475").join(format!("{}.dat", c.name)),
        Ipv6 => dir.join("rfc5118").join(c.name),
    }
}

/// The file exactly as the RFC archive holds it.
fn raw(c: &Case) -> Vec<u8> {
    let p = path(c);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The message as it travels. RFC 4475's files already are; RFC 5118's archive uses bare
/// LF, leaves two header sections open and declares two wrong Content-Lengths
/// (tests/data/README.md), so for them: LF becomes CRLF, the header section is closed, and
/// the Content-Length digits are set to the body's length. Nothing else changes.
fn wire(c: &Case) -> Vec<u8> {
    let bytes = raw(c);
    if c.rfc == Torture {
        return bytes;
    }
    let mut crlf = Vec::with_capacity(bytes.len() + 64);
    for &b in &bytes {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    let end = match find(&crlf, b"\r\n\r\n") {
        Some(i) => i,
        None => {
            crlf.extend_from_slice(b"\r\n");
            crlf.len() - 4
        }
    };
    let (head, body) = crlf.split_at(end + 4);
    let head = String::from_utf8(head.to_vec()).expect("RFC 5118 heads are ASCII");
    let mut out = String::new();
    for line in head.split_inclusive("\r\n") {
        match line.split_once(':') {
            Some((name, _)) if name.trim().eq_ignore_ascii_case("content-length") => {
                out.push_str(&format!("{name}: {}\r\n", body.len()));
            }
            _ => out.push_str(line),
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_valid(c: &Case) -> bool {
    match c.rfc {
        Torture => c.section.starts_with("3.1.1."),
        Ipv6 => c.name != "ipv6-bad",
    }
}

fn known<'a>(list: &'a [(&str, &'a str)], name: &str) -> Option<&'a str> {
    list.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

// ---- the harness -------------------------------------------------------------------------

/// Our address.
const LOCAL: &str = "127.0.0.1:5060";
/// Where the torture messages come from.
const PEER: &str = "192.0.2.77:5070";
/// An answer for the calls that come up (the SDP is not the endpoint's concern).
const ANSWER: &str = "v=0\r\no=sotto 1 1 IN IP4 127.0.0.1\r\ns=sotto\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=sendrecv\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

thread_local! {
    /// Panics on this thread, including those the endpoint catches.
    static PANICS: Cell<u32> = const { Cell::new(0) };
}

/// Counts every panic per thread, then reports it as usual.
fn count_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

fn panics() -> u32 {
    PANICS.with(|p| p.get())
}

/// What one endpoint did with one message.
struct Observed {
    responses: Vec<Response>,
    incoming: bool,
    other_events: usize,
    /// For a call that came up: the status the endpoint sent when the call was accepted.
    accepted_with: Option<u16>,
}

impl Observed {
    fn outcome(&self) -> Outcome {
        if self.incoming {
            return Accepted;
        }
        match self.responses.iter().map(|r| r.code).find(|c| *c >= 200) {
            Some(code) if (200..300).contains(&code) => Accepted,
            Some(code) => Status(code),
            None if self.responses.is_empty() && self.other_events == 0 => Dropped,
            None => Outcome::Odd,
        }
    }

    fn codes(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.code).collect()
    }
}

/// A fresh endpoint fed `bytes` over `flow`. Everything it sends must parse as a
/// response; a call that comes up is accepted, and the 200 must parse too.
fn feed(name: &str, bytes: &[u8], flow: Flow) -> Observed {
    let mut ep = Endpoint::new(EndpointConfig {
        local: addr(LOCAL),
        timers: Timers::default(),
        limits: Limits::default(),
        max_transactions: 100,
        local_tcp: None,
        local_tls: None,
        // The UDP anti-amplification cap is a policy of its own (tests/sip_endpoint.rs);
        // here every answer the RFC logic produces must be visible.
        amplification_guard: false,
        trunks: Default::default(),
    });
    #[allow(clippy::disallowed_methods)] // one real instant starts the virtual clock
    let now = Instant::now();
    ep.handle_message(now, flow, Bytes::copy_from_slice(bytes));
    let sent: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
    let events: Vec<Event> = std::iter::from_fn(|| ep.poll_event()).collect();
    let responses: Vec<Response> = sent.iter().map(|t| response(name, t)).collect();
    let mut incoming = None;
    let mut other_events = 0;
    for e in events {
        match e {
            Event::Incoming { call, .. } if incoming.is_none() => incoming = Some(call),
            _ => other_events += 1,
        }
    }
    let accepted_with = incoming.map(|call| {
        ep.accept(now, call, ANSWER);
        let sent: Vec<Transmit> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        assert_eq!(sent.len(), 1, "{name}: accept sent {} messages", sent.len());
        response(name, &sent[0]).code
    });
    Observed {
        responses,
        incoming: incoming.is_some(),
        other_events,
        accepted_with,
    }
}

fn response(name: &str, t: &Transmit) -> Response {
    match parse(t.bytes.clone(), &Limits::default()) {
        Ok(Message::Response(r)) => r,
        other => panic!(
            "{name}: the endpoint sent something that is not a response ({:?}): {}",
            other.map(|_| "a request"),
            String::from_utf8_lossy(&t.bytes)
        ),
    }
}

fn udp() -> Flow {
    Flow::udp(addr(PEER))
}

fn tcp() -> Flow {
    Flow::stream(Transport::Tcp, addr(PEER), ConnectionId(7))
}

// ---- the tests ---------------------------------------------------------------------------

#[test]
fn the_corpus_is_the_rfcs_byte_for_byte() {
    let rfc4475 = CASES.iter().filter(|c| c.rfc == Torture).count();
    let rfc5118 = CASES.iter().filter(|c| c.rfc == Ipv6).count();
    assert_eq!(
        (rfc4475, rfc5118),
        (49, 12),
        "RFC 4475 has 49 messages, RFC 5118 12"
    );
    let count = |prefix: &str| {
        CASES
            .iter()
            .filter(|c| c.rfc == Torture && c.section.starts_with(prefix))
            .count()
    };
    assert_eq!(
        [
            count("3.1.1."),
            count("3.1.2."),
            count("3.2."),
            count("3.3."),
            count("3.4.")
        ],
        [13, 19, 1, 15, 1]
    );
    assert_eq!(EXPECTED_SHA256.len(), CASES.len());
    for c in CASES {
        let bytes = raw(c);
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let expected = known(EXPECTED_SHA256, c.name).expect("a hash for every case");
        assert_eq!(hex, expected, "{}: not the RFC archive's bytes", c.name);
    }
    // The files say what the README says about them.
    let by_name = |name: &str| raw(CASES.iter().find(|c| c.name == name).expect("case"));
    assert!(by_name("intmeth").contains(&0), "intmeth carries a NUL");
    assert!(
        std::str::from_utf8(&by_name("mpart01")).is_err(),
        "mpart01's body is binary"
    );
    assert!(
        !by_name("baddn").ends_with(b"\r\n\r\n"),
        "baddn's head is open"
    );
    for c in CASES.iter().filter(|c| c.rfc == Ipv6) {
        assert!(
            !raw(c).contains(&b'\r'),
            "{}: RFC 5118 uses bare LF",
            c.name
        );
    }
    // A declared Content-Length matches the body, except where the mismatch is the test.
    for c in CASES.iter().filter(|c| c.rfc == Torture) {
        let bytes = raw(c);
        let Some(head_end) = find(&bytes, b"\r\n\r\n").map(|i| i + 4) else {
            continue;
        };
        let lengths = content_lengths(&bytes[..head_end]);
        let body = bytes.len() - head_end;
        match c.name {
            "clerr" | "ncl" | "mcl01" | "dblreq" => {}
            "inv2543" => assert!(lengths.is_empty(), "inv2543 has no Content-Length"),
            _ => assert_eq!(lengths, [body.to_string()], "{}", c.name),
        }
    }
}

/// The Content-Length values (long and compact form) of a head, as written.
fn content_lengths(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| {
            let name = name.trim();
            name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")
        })
        .map(|(_, value)| value.trim().to_string())
        .collect()
}

#[test]
fn each_message_gets_what_the_rfc_asks_of_a_uas() {
    count_panics();
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for c in CASES {
        let seen = feed(c.name, &wire(c), udp());
        let outcome = seen.outcome();
        report.push(format!(
            "{:<30} §{:<9} expect {:<40} got {:?} {:?}",
            c.name,
            c.section,
            format!("{:?}", c.expect),
            outcome,
            seen.codes()
        ));
        if seen.incoming {
            // The call that came up can be answered, and the 200 parses.
            assert_eq!(seen.accepted_with, Some(200), "{}", c.name);
            assert!(
                seen.codes().iter().all(|c| *c < 200),
                "{}: a final answer besides the event",
                c.name
            );
        }
        let known = KNOWN_FAILURES.iter().find(|(n, _, _)| *n == c.name);
        match (c.expect.allows(outcome), known) {
            (true, None) => {}
            (false, Some((_, actual, _))) if *actual == outcome => {}
            (false, None) => wrong.push(format!(
                "{}: expected {:?}, got {outcome:?}",
                c.name, c.expect
            )),
            (false, Some((_, actual, _))) => wrong.push(format!(
                "{}: known to give {actual:?}, now gives {outcome:?}; update KNOWN_FAILURES",
                c.name
            )),
            (true, Some(_)) => wrong.push(format!(
                "{}: now does what the RFC asks ({outcome:?}); remove it from KNOWN_FAILURES",
                c.name
            )),
        }
    }
    println!("{}", report.join("\n"));
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(
        panics(),
        0,
        "something panicked (maybe caught inside the endpoint)"
    );
}

/// What the answers carry, beyond their status.
#[test]
fn refusals_carry_the_headers_their_status_requires() {
    count_panics();
    let by_name = |name: &str| CASES.iter().find(|c| c.name == name).expect("case");
    let final_of = |name: &str| {
        let c = by_name(name);
        let seen = feed(name, &wire(c), udp());
        seen.responses
            .into_iter()
            .find(|r| r.code >= 200)
            .unwrap_or_else(|| panic!("{name}: no final response"))
    };
    let header = |r: &Response, name: &str| {
        r.headers
            .get_raw(&ezk_sip_types::Name::from(name.to_string()))
            .map(|v| v.as_str().trim().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // §3.3.5: the Require tokens, not the Proxy-Require ones (a proxy's business).
    let r = final_of("bext01");
    let unsupported: Vec<String> = header(&r, "Unsupported")
        .split(',')
        .map(|t| t.trim().to_string())
        .collect();
    assert_eq!(
        unsupported,
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    // 405 and 501 list what we do implement (RFC 3261 §20.5, §21.4.6, §21.5.2).
    for name in ["escnull", "regaut01", "intmeth", "esc02"] {
        let allow = header(&final_of(name), "Allow").to_ascii_uppercase();
        for method in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"] {
            assert!(
                allow.contains(method),
                "{name}: Allow `{allow}` lacks {method}"
            );
        }
        assert!(!allow.contains("REGISTER"), "{name}: {allow}");
    }
    // §3.3.6: 415 names what we read (RFC 3261 §21.4.13); so does the 406 of §3.3.15.
    assert_eq!(header(&final_of("invut"), "Accept"), "application/sdp");
    assert_eq!(header(&final_of("sdp01"), "Accept"), "application/sdp");
    // §3.1.2.16: the 505 copies the request's Via as written (it names SIP/7.0, which no
    // typed parser here reads) and adds a To tag.
    let r = final_of("badvers");
    assert_eq!(
        header(&r, "Via"),
        "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw"
    );
    assert!(r.to().expect("To").tag.is_some());
    // §3.1.1.1: the escaped quotes of wsinv's From survive into the 481 byte for byte.
    assert_eq!(
        header(&final_of("wsinv"), "From"),
        "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8"
    );
    // §3.3.1: the 400 answers on the Via and with the CSeq the request had, and invents
    // no From, To or Call-ID.
    let r = final_of("insuf");
    assert_eq!(r.cseq().expect("CSeq").cseq, 193942);
    assert_eq!(
        r.top_via()
            .expect("Via")
            .params
            .get_val("branch")
            .map(|b| b.to_string()),
        Some("z9hG4bKkdj.insuf".to_string())
    );
    for name in ["From", "To", "Call-ID"] {
        assert_eq!(header(&r, name), "", "insuf: {name} was invented");
    }
    // Every response copies the request's Call-ID and CSeq (RFC 3261 §8.2.6.2).
    for c in CASES {
        let bytes = wire(c);
        let Ok(Message::Request(req)) = parse(Bytes::from(bytes.clone()), &Limits::default())
        else {
            continue;
        };
        for r in feed(c.name, &bytes, udp()).responses {
            assert_eq!(
                r.call_id().ok().map(|i| i.to_string()),
                req.call_id().ok().map(|i| i.to_string()),
                "{}",
                c.name
            );
            assert_eq!(
                r.raw(&ezk_sip_types::Name::CSEQ).map(str::trim),
                req.raw(&ezk_sip_types::Name::CSEQ).map(str::trim),
                "{}",
                c.name
            );
        }
    }
    assert_eq!(panics(), 0);
}

/// RFC 4475 §3.1.1 and the valid RFC 5118 messages parse, and a response built from each
/// request parses again with the request's identity.
#[test]
fn valid_messages_parse_and_their_responses_parse_again() {
    count_panics();
    let source = addr(PEER);
    let mut wrong = Vec::new();
    for c in CASES.iter().filter(|c| is_valid(c)) {
        let bytes = wire(c);
        let message = match parse(Bytes::from(bytes), &Limits::default()) {
            Ok(m) => m,
            Err(e) => {
                if known(KNOWN_ROUNDTRIP_FAILURES, c.name).is_none() {
                    wrong.push(format!("{}: does not parse: {e}", c.name));
                }
                continue;
            }
        };
        let req = match message {
            Message::Response(r) => {
                // unreason, noreason: nothing to rebuild; the codes are the RFC's.
                let expected = if c.name == "unreason" { 200 } else { 100 };
                assert_eq!(r.code, expected, "{}", c.name);
                continue;
            }
            Message::Request(req) => req,
        };
        let rebuilt = match build_response(&req, source, 200, Some("tt"), &[], None) {
            Ok(b) => b,
            Err(e) => {
                if known(KNOWN_ROUNDTRIP_FAILURES, c.name).is_none() {
                    wrong.push(format!("{}: no response can be built: {e}", c.name));
                }
                continue;
            }
        };
        if known(KNOWN_ROUNDTRIP_FAILURES, c.name).is_some() {
            wrong.push(format!(
                "{}: now round-trips; remove it from KNOWN_ROUNDTRIP_FAILURES",
                c.name
            ));
        }
        let again = match parse(Bytes::from(rebuilt.clone()), &Limits::default()) {
            Ok(Message::Response(r)) => r,
            other => {
                wrong.push(format!(
                    "{}: the rebuilt response does not parse ({:?}): {}",
                    c.name,
                    other.map(|_| "a request"),
                    String::from_utf8_lossy(&rebuilt)
                ));
                continue;
            }
        };
        assert_eq!(again.code, 200, "{}", c.name);
        assert_eq!(
            again.vias().map(|v| v.len()).ok(),
            req.vias().map(|v| v.len()).ok(),
            "{}: every Via is copied",
            c.name
        );
        assert_eq!(
            again.call_id().ok().map(|i| i.to_string()),
            req.call_id().ok().map(|i| i.to_string()),
            "{}",
            c.name
        );
        assert_eq!(
            again.cseq().ok().map(|s| s.cseq),
            req.cseq().ok().map(|s| s.cseq),
            "{}",
            c.name
        );
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(panics(), 0);
}

/// What a stream framer must make of one file, worked out from the RFCs (RFC 3261 §18.3,
/// §20.14; RFC 4475 §3.1.2.2, §3.1.2.3, §3.3.9) independently of `framing.rs`.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    /// A message of this many octets (the rest, if any, is the next message).
    Message(usize),
    /// Not all there yet: read more.
    Wait,
    /// The stream cannot be framed: close the connection.
    Reject,
}

fn expected_frame(bytes: &[u8]) -> Framed {
    let Some(head_end) = find(bytes, b"\r\n\r\n").map(|i| i + 4) else {
        return Framed::Wait;
    };
    let lengths = content_lengths(&bytes[..head_end]);
    let mut values = Vec::new();
    for l in &lengths {
        match l.parse::<usize>() {
            Ok(v) => values.push(v),
            Err(_) => return Framed::Reject,
        }
    }
    values.dedup();
    match values.as_slice() {
        // RFC 3261 makes it mandatory on streams; without it, no body.
        [] => Framed::Message(head_end),
        [len] if head_end + len <= bytes.len() => Framed::Message(head_end + len),
        [_] => Framed::Wait,
        _ => Framed::Reject,
    }
}

#[test]
fn stream_framing_finds_each_message_and_nothing_panics() {
    count_panics();
    const MAX: usize = 64 * 1024;
    let mut wrong = Vec::new();
    let mut whole = 0;
    for c in CASES {
        for (form, bytes) in [("raw", raw(c)), ("wire", wire(c))] {
            // Every prefix: a stream delivers in arbitrary pieces.
            for cut in 0..bytes.len() {
                let _ = check(&bytes[..cut], MAX);
            }
            let got = match check(&bytes, MAX) {
                Ok(Frame::Message(len)) => Framed::Message(len),
                Ok(Frame::Incomplete) => Framed::Wait,
                Ok(Frame::KeepAlive { .. }) => {
                    wrong.push(format!("{} ({form}): taken for a keep-alive", c.name));
                    continue;
                }
                Err(_) => Framed::Reject,
            };
            let expected = expected_frame(&bytes);
            let known = known(KNOWN_FRAMING_FAILURES, c.name);
            match (got == expected, known) {
                (true, None) | (false, Some(_)) => {}
                (false, None) => wrong.push(format!(
                    "{} ({form}): framed as {got:?}, expected {expected:?}",
                    c.name
                )),
                (true, Some(_)) => wrong.push(format!(
                    "{}: framed right now; remove it from KNOWN_FRAMING_FAILURES",
                    c.name
                )),
            }
            // Valid messages with a right Content-Length frame as the whole file.
            if form == "wire" && is_valid(c) && c.name != "dblreq" {
                if let Framed::Message(len) = got {
                    assert_eq!(len, bytes.len(), "{}", c.name);
                    whole += 1;
                }
            }
        }
    }
    // All of §3.1.1 but dblreq (a second request follows) and all valid RFC 5118 ones.
    assert_eq!(whole, 12 + 11, "valid messages framed whole");
    // dblreq: the REGISTER alone; the INVITE-looking rest is the next "message".
    let dblreq = raw(CASES.iter().find(|c| c.name == "dblreq").expect("case"));
    assert_eq!(check(&dblreq, MAX), Ok(Frame::Message(dblreq.len() - 450)));
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    assert_eq!(panics(), 0, "framing panicked");
}

/// Over TCP, each framed message gets the same answer as over UDP, and the answer goes
/// back on the connection it came from.
#[test]
fn framed_messages_get_the_same_answer_over_tcp() {
    count_panics();
    for c in CASES {
        let bytes = wire(c);
        let Ok(Frame::Message(len)) = check(&bytes, 64 * 1024) else {
            continue;
        };
        let over_tcp = feed(c.name, &bytes[..len], tcp());
        if len == bytes.len() {
            let over_udp = feed(c.name, &bytes, udp());
            assert_eq!(
                over_tcp.outcome(),
                over_udp.outcome(),
                "{}: TCP and UDP differ",
                c.name
            );
        }
        // The raw RFC 5118 bytes (bare LF) go through too, whatever becomes of them.
        let _ = feed(c.name, &raw(c), tcp());
    }
    assert_eq!(panics(), 0);
}

/// The raw archive bytes, and every truncation of them, as datagrams: nothing panics and
/// anything sent is a response.
#[test]
fn no_prefix_of_any_message_panics_the_endpoint() {
    count_panics();
    for c in CASES {
        let bytes = raw(c);
        let step = (bytes.len() / 64).max(1);
        for cut in (0..=bytes.len()).step_by(step) {
            let _ = feed(c.name, &bytes[..cut], udp());
        }
        let _ = feed(c.name, &bytes, udp());
    }
    assert_eq!(panics(), 0);
}
