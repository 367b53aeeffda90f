//! Topic names and partitioning, by Kafka's rules, so that a topic and a key
//! mean the same on the embedded log and on a broker.

use super::record::Record;

/// The most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A topic name that breaks Kafka's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "topic name {0:?} is not valid: use 1 to 249 of the characters a-z A-Z 0-9 . _ - (the Kafka rule)"
)]
pub struct BadTopicName(pub String);

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `record` in a topic of `partitions` partitions.
pub fn partition_for(record: &Record, partitions: u32) -> u32 {
    let basis = record
        .key
        .as_deref()
        .or(record.value.as_deref())
        .unwrap_or(&[]);
    ((murmur2(basis) & 0x7fff_ffff) as u32) % partitions.max(1)
}

/// Checks a topic name against Kafka's rule.
///
/// # Errors
///
/// [`BadTopicName`] naming it.
pub fn check_topic_name(name: &str) -> Result<(), BadTopicName> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BadTopicName(name.to_owned()))
    }
}

/// The partitions a topic of `count` has, for messages: "its only
/// partition is 0" or "its partitions are 0 to N-1" (numbered from 0, as
/// on Kafka).
pub fn partitions_text(count: u32) -> String {
    match count {
        0 => "it has no partition".to_owned(),
        1 => "its only partition is 0".to_owned(),
        n => format!("its partitions are 0 to {}", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn partitions_are_named_from_zero() {
        assert_eq!(partitions_text(1), "its only partition is 0");
        assert_eq!(partitions_text(4), "its partitions are 0 to 3");
    }
}
