//! The autoscaler's wire messages (`S/pkg/autoscaler/metrics/stat.proto`): the queue serves a
//! `Stat` on its metrics port; the activator sends `WireStatMessages` over the stat websocket.

use prost::Message;

/// One pod's (or one activator's, for a revision) concurrency and request rates.
#[derive(Clone, PartialEq, Message)]
pub struct Stat {
    #[prost(string, tag = "1")]
    pub pod_name: String,
    #[prost(double, tag = "2")]
    pub average_concurrent_requests: f64,
    #[prost(double, tag = "3")]
    pub average_proxied_concurrent_requests: f64,
    #[prost(double, tag = "4")]
    pub request_count: f64,
    #[prost(double, tag = "5")]
    pub proxied_request_count: f64,
    #[prost(double, tag = "6")]
    pub process_uptime: f64,
    /// Unix seconds; the autoscaler stamps its receive time when 0.
    #[prost(int64, tag = "7")]
    pub timestamp: i64,
}

/// A [`Stat`] for the revision `namespace`/`name`.
#[derive(Clone, PartialEq, Message)]
pub struct WireStatMessage {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, optional, tag = "3")]
    pub stat: Option<Stat>,
}

/// One websocket binary frame to the autoscaler.
#[derive(Clone, PartialEq, Message)]
pub struct WireStatMessages {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<WireStatMessage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// proto3 bytes written out by hand from the schema: key = field << 3 | wire type.
    #[test]
    fn a_stat_encodes_as_proto3_zero_fields_omitted_in_field_order() {
        let stat = Stat {
            pod_name: "pod-1".into(),
            average_concurrent_requests: 1.5,
            process_uptime: 14.0,
            timestamp: 300,
            ..Stat::default()
        };
        let mut want = b"\x0a\x05pod-1\x11".to_vec();
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.push(0x31);
        want.extend_from_slice(&14.0f64.to_le_bytes());
        want.extend_from_slice(b"\x38\xac\x02"); // 300 as a varint
        assert_eq!(stat.encode_to_vec(), want);
        assert_eq!(Stat::default().encode_to_vec(), Vec::<u8>::new());
    }

    #[test]
    fn wire_messages_nest_each_stat_in_its_revision() {
        let msgs = WireStatMessages {
            messages: vec![WireStatMessage {
                namespace: "ns".into(),
                name: "rev".into(),
                stat: Some(Stat {
                    pod_name: "a".into(),
                    request_count: 1.0,
                    ..Stat::default()
                }),
            }],
        };
        let mut stat = b"\x0a\x01a\x21".to_vec();
        stat.extend_from_slice(&1.0f64.to_le_bytes());
        let mut msg = b"\x0a\x02ns\x12\x03rev\x1a".to_vec();
        msg.push(stat.len() as u8);
        msg.extend_from_slice(&stat);
        let mut want = vec![0x0a, msg.len() as u8];
        want.extend_from_slice(&msg);
        let bytes = msgs.encode_to_vec();
        assert_eq!(bytes, want);
        assert_eq!(WireStatMessages::decode(&bytes[..]), Ok(msgs));
    }

    #[test]
    fn unknown_fields_are_skipped_and_garbage_is_an_error() {
        // Field 9 (varint 7) before field 1: a newer autoscaler's schema still decodes.
        let bytes = b"\x48\x07\x0a\x01p";
        let stat = Stat::decode(&bytes[..]).expect("decodes");
        assert_eq!(stat.pod_name, "p");
        assert!(Stat::decode(&b"\x0a\x05po"[..]).is_err(), "truncated");
    }
}
