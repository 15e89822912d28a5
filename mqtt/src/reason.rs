//! Reason codes as a peer sent them: mqtt-proto's typed v5 enums, or, for a code the codec does
//! not know for that packet (read by a lenient decoder), its byte. Invariants: every code keeps
//! its wire byte, and a byte of 0x80 or more is a failure (MQTT 5.0 section 2.4).

use std::fmt;

use mqtt_proto::v5;

/// A v5 reason code enum of mqtt-proto: its byte, and the enum value of a byte.
pub trait ReasonCode: Copy + fmt::Debug + PartialEq {
    fn from_byte(b: u8) -> Option<Self>;
    fn byte(self) -> u8;
}

macro_rules! reason_code {
    ($($t:ty),*) => {$(
        impl ReasonCode for $t {
            fn from_byte(b: u8) -> Option<Self> {
                <$t>::from_u8(b)
            }
            fn byte(self) -> u8 {
                self as u8
            }
        }
    )*};
}

reason_code!(
    v5::ConnectReasonCode,
    v5::DisconnectReasonCode,
    v5::PubackReasonCode,
    v5::PubrecReasonCode,
    v5::PubcompReasonCode,
    v5::SubscribeReasonCode,
    v5::UnsubscribeReasonCode
);

/// A received reason code: typed when the packet kind defines it, else the byte as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code<T> {
    Known(T),
    Unknown(u8),
}

impl<T: ReasonCode> Code<T> {
    /// The typed code for `b`, or `Unknown(b)`.
    pub fn from_byte(b: u8) -> Self {
        T::from_byte(b).map_or(Code::Unknown(b), Code::Known)
    }

    /// The byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Code::Known(c) => c.byte(),
            Code::Unknown(b) => b,
        }
    }

    /// 0x80 and above: the peer refused.
    pub fn is_failure(self) -> bool {
        self.byte() >= 0x80
    }

    /// The same byte read as another packet's reason code (PUBREC and PUBACK share one table).
    pub fn cast<U: ReasonCode>(self) -> Code<U> {
        Code::from_byte(self.byte())
    }
}

impl<T: ReasonCode> From<T> for Code<T> {
    fn from(c: T) -> Self {
        Code::Known(c)
    }
}

/// `NotAuthorized (0x87)`, or `0x03` for an unknown code.
impl<T: ReasonCode> fmt::Display for Code<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Known(c) => write!(f, "{c:?} ({:#04x})", c.byte()),
            Code::Unknown(b) => write!(f, "{b:#04x}"),
        }
    }
}

/// What a CONNACK reason code means, in words for logs and status (MQTT 5.0 table 3-1).
pub fn connect_text(code: v5::ConnectReasonCode) -> &'static str {
    use v5::ConnectReasonCode as C;
    match code {
        C::Success => "success",
        C::UnspecifiedError => "unspecified error",
        C::MalformedPacket => "malformed packet",
        C::ProtocolError => "protocol error",
        C::ImplementationSpecificError => "implementation specific error",
        C::UnsupportedProtocolVersion => "unsupported protocol version",
        C::ClientIdentifierNotValid => "client identifier not valid",
        C::BadUserNameOrPassword => "bad user name or password",
        C::NotAuthorized => "not authorized",
        C::ServerUnavailable => "server unavailable",
        C::ServerBusy => "server busy",
        C::Banned => "banned",
        C::BadAuthMethod => "bad authentication method",
        C::TopicNameInvalid => "topic name invalid",
        C::PacketTooLarge => "packet too large",
        C::QuotaExceeded => "quota exceeded",
        C::PayloadFormatInvalid => "payload format invalid",
        C::RetainNotSupported => "retain not supported",
        C::QoSNotSupported => "QoS not supported",
        C::UseAnotherServer => "use another server",
        C::ServerMoved => "server moved",
        C::ConnectionRateExceeded => "connection rate exceeded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bytes_are_typed_and_unknown_ones_kept() {
        let c: Code<v5::PubackReasonCode> = Code::from_byte(0x97);
        assert_eq!(c, Code::Known(v5::PubackReasonCode::QuotaExceeded));
        assert!(c.is_failure());
        // 0x95 (packet too large) is no PUBACK code in MQTT 5.0, but a broker may send it.
        let c: Code<v5::PubackReasonCode> = Code::from_byte(0x95);
        assert_eq!(c, Code::Unknown(0x95));
        assert!(c.is_failure());
        assert_eq!(c.byte(), 0x95);
        let c: Code<v5::SubscribeReasonCode> = Code::from_byte(0x03);
        assert!(!c.is_failure(), "an unknown code below 0x80 is a success");
    }

    #[test]
    fn codes_print_with_their_byte() {
        let c = Code::from(v5::PubackReasonCode::NotAuthorized);
        assert_eq!(c.to_string(), "NotAuthorized (0x87)");
        assert_eq!(
            Code::<v5::PubackReasonCode>::Unknown(0x95).to_string(),
            "0x95"
        );
    }

    #[test]
    fn pubrec_codes_cast_to_puback_codes_by_byte() {
        let c = Code::from(v5::PubrecReasonCode::PayloadFormatInvalid);
        assert_eq!(
            c.cast::<v5::PubackReasonCode>(),
            Code::Known(v5::PubackReasonCode::PayloadFormatInvalid)
        );
    }

    #[test]
    fn connect_refusals_read_as_words() {
        assert_eq!(
            connect_text(v5::ConnectReasonCode::NotAuthorized),
            "not authorized"
        );
        assert_eq!(
            connect_text(v5::ConnectReasonCode::BadUserNameOrPassword),
            "bad user name or password"
        );
    }
}
