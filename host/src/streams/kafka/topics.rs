//! Topic admin: creating the topics a processor needs, reading end offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{BrokerError, Client, GroupContext, KafkaConfig, kafka};

/// Makes sure `topics` exist: creates the missing ones with `partitions`
/// (per topic, else the config's default) when `create_topics` is on.
///
/// # Errors
///
/// [`BrokerError::MissingTopic`] when one is missing and creation is off;
/// [`BrokerError::Kafka`] when the broker cannot be reached or refuses.
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &BTreeMap<String, Option<u32>>,
) -> Result<(), BrokerError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(kafka("admin client"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka(format!("reading metadata from {}", config.brokers)))?;
    let existing: BTreeSet<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    let missing: Vec<(&String, i32)> = topics
        .iter()
        .filter(|(t, _)| !existing.contains(*t))
        .map(|(t, p)| (t, p.unwrap_or(config.partitions) as i32))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !config.create_topics {
        return Err(BrokerError::MissingTopic(missing[0].0.clone()));
    }
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(t, p)| {
            NewTopic::new(
                t,
                *p,
                TopicReplication::Fixed(config.replication_factor as i32),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(kafka("creating topics"))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(BrokerError::Kafka {
                    context: format!("creating topic {t}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// How many partitions each of `topics` has on the broker (missing ones
/// are left out).
///
/// # Errors
///
/// [`BrokerError::Kafka`] when the broker cannot be reached.
pub fn partition_counts(
    config: &KafkaConfig,
    topics: &[String],
) -> Result<BTreeMap<String, u32>, BrokerError> {
    let consumer: BaseConsumer<GroupContext> = config
        .config_for(Client::Consumer)
        .create_with_context(GroupContext::default())
        .map_err(kafka("creating the consumer"))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka(format!("reading metadata from {}", config.brokers)))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && topics.iter().any(|n| n == t.name()))
        .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
        .collect())
}

/// How many partitions each of `topics` has, once the broker's metadata
/// shows every one of them with its partitions: a topic that was just
/// created (by this host or another starting at the same time) can be
/// missing from the metadata for a moment, and a changelog sized from that
/// would get one partition instead of one per input partition. Waits up
/// to `timeout`.
///
/// # Errors
///
/// [`BrokerError::NoSuchTopic`] naming the first topic still missing at
/// `timeout`; [`BrokerError::Kafka`] when the broker cannot be reached.
pub async fn settled_partition_counts(
    config: &KafkaConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, u32>, BrokerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let counts = partition_counts(config, topics)?;
        let missing = topics
            .iter()
            .find(|t| counts.get(*t).is_none_or(|n| *n == 0));
        let Some(missing) = missing else {
            return Ok(counts);
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::NoSuchTopic(missing.clone()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes sure the compacted topic `topic` exists with at least
/// `partitions` partitions (`cleanup.policy=compact`): a changelog gets one
/// partition per input partition, the replays topic one.
///
/// # Errors
///
/// [`BrokerError::MissingTopic`] when it is missing and creation is off;
/// [`BrokerError::TooFewPartitions`] when it has fewer than needed;
/// [`BrokerError::Kafka`] when the broker refuses.
pub async fn ensure_compacted(
    config: &KafkaConfig,
    topic: &str,
    partitions: u32,
) -> Result<(), BrokerError> {
    let existing = partition_counts(config, &[topic.to_owned()])?;
    if let Some(&n) = existing.get(topic) {
        if n < partitions {
            return Err(BrokerError::TooFewPartitions {
                topic: topic.to_owned(),
                partitions: n,
                needed: partitions,
            });
        }
        return Ok(());
    }
    if !config.create_topics {
        return Err(BrokerError::MissingTopic(topic.to_owned()));
    }
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(kafka("admin client"))?;
    let new = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(config.replication_factor as i32),
    )
    .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(kafka("creating topics"))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, partitions, "created compacted topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(BrokerError::Kafka {
                    context: format!("creating topic {t}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// The end offset (high watermark) of `topic`/`partition`.
///
/// # Errors
///
/// [`BrokerError::Kafka`].
pub fn high_watermark(
    config: &KafkaConfig,
    topic: &str,
    partition: u32,
) -> Result<u64, BrokerError> {
    let consumer: BaseConsumer<GroupContext> = config
        .config_for(Client::Consumer)
        .create_with_context(GroupContext::default())
        .map_err(kafka("creating the consumer"))?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition as i32, Duration::from_secs(30))
        .map_err(kafka(format!("reading the end of {topic}/{partition}")))?;
    Ok(high.max(0) as u64)
}
