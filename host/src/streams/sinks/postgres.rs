//! The PostgreSQL sink: records into a table, **effectively-once**.
//!
//! ```toml
//! [sink.postgres]
//! url = "postgres://tidewater@127.0.0.1:5432/tidewater"
//! table = "readings"              # or "schema.table"
//! mode = "upsert"                 # or "append" (default)
//! key = ["device", "ts"]          # upsert: the columns that identify a row
//! version = "seq"                 # upsert, optional: a stale record never overwrites a newer one
//! create_table = true             # else the table is checked against the mapping at start
//! columns = [
//!   { name = "device", type = "text", pointer = "/device" },
//!   { name = "ts", type = "timestamptz", pointer = "/ts" },
//!   { name = "measurements", type = "jsonb", pointer = "/measurements" },
//! ]
//! ```
//!
//! # How a batch commits
//!
//! One PostgreSQL transaction per batch of one partition holds the batch's
//! rows **and** the sink's position, `tidewater_sink_offsets(sink, topic,
//! partition, next_offset)`, which moves only from the offset the batch was
//! read at (a compare-and-set: a second host on the same sink, or a COMMIT
//! that landed unseen, makes the transaction roll back). On start, and
//! after any lost connection, the sink reads its position from PostgreSQL,
//! never from redb. So when the connection drops during COMMIT, the sink
//! reconnects, reads its position and redoes the batch only if it did not
//! move: every record's effect is in the table once.
//!
//! - `mode = "append"`: `INSERT ... ON CONFLICT (idempotency_key) DO
//!   NOTHING`; the column `idempotency_column` (default `idempotency_key`,
//!   unique) holds the record's `idempotency-key` header (else
//!   `<topic>/<partition>/<offset>`). Tombstones are skipped.
//! - `mode = "upsert"`: `INSERT ... ON CONFLICT (key) DO UPDATE`, only
//!   where something changes, or with `version`, only `WHERE excluded.v >
//!   t.v`. A tombstone deletes the row of its key. Records of one key in one
//!   batch are compacted first (PostgreSQL refuses to touch a row twice in a
//!   statement): the last by offset wins, or with `version` the highest
//!   version (ties: the last by offset).
//!
//! Rows go in as typed binary arrays, one `INSERT ... SELECT
//! unnest($1::text[]), ...` per batch. While batches have been new rows it
//! is a plain `INSERT`, without `ON CONFLICT` (which probes the unique index
//! before each row): about a third less work for PostgreSQL. When a row of
//! the batch is there already (a unique violation), or another data or
//! constraint error stops it, the transaction rolls back and the batch is
//! written again with `ON CONFLICT`, as above; after a unique violation the
//! next 1, then 2, 4 ... up to 64 batches go straight to `ON CONFLICT`. So
//! the table ends up the same either way. BEGIN, the compare-and-set of the
//! position and the statements go out together (pipelined), then COMMIT:
//! two round trips per batch. After a full batch, the sink reads and plans
//! (maps and compacts) the next one on a second thread while this one is
//! written.
//!
//! # Failures
//!
//! - Connection failures (SQLSTATE classes 08, 53, 57, 58, or no answer)
//!   and serialization failures (class 40) are retried with backoff; the
//!   position holds and nothing is skipped. Other errors of the statement
//!   (a dropped table, a missing privilege) are retried the same way, with
//!   the sink marked unhealthy.
//! - A record that does not fit the mapping, or that PostgreSQL refuses
//!   with a data or constraint error (classes 22 and 23), goes to the
//!   dead-letter topic with `tidewater-sqlstate` and the message; the batch
//!   is bisected under savepoints to find it, and the rest is written. The
//!   dead letters are durable before the COMMIT.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::mapping::{ColumnConfig, Mapping, Row, SqlType, SqlValue, compact};
use super::{Backoff, Context, Delivered, Outcome, SinkError, nap};
use crate::streams::dead_letter::{dead_letter, dlq_headers};
use crate::streams::{LogRecord, Record};

/// The table that holds every sink's positions.
pub const OFFSETS_TABLE: &str = "tidewater_sink_offsets";

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Insert; a record whose idempotency key is there already is skipped.
    #[default]
    Append,
    /// Insert or update on the key columns; tombstones delete.
    Upsert,
}

/// `[sink.postgres]`; see the module docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/database` (or libpq's
    /// `key=value` form). Plain TCP: TLS is not supported yet. May be left
    /// out when `run --postgres-url` (`TIDEWATER_POSTGRES_URL`) gives it.
    #[serde(default)]
    pub url: String,
    /// The table, `name` or `schema.name`.
    pub table: String,
    /// `append` (default) or `upsert`.
    #[serde(default)]
    pub mode: Mode,
    /// Upsert: the columns that identify a row (a unique index on exactly
    /// them must exist; `create_table` makes it the primary key).
    #[serde(default)]
    pub key: Vec<String>,
    /// Upsert, optional: a column whose value orders records of one key; a
    /// record updates the row only when its version is greater.
    pub version: Option<String>,
    /// Append: the unique column holding each record's idempotency key
    /// (added as `text` when not among `columns`). Default `idempotency_key`.
    #[serde(default = "default_idempotency_column")]
    pub idempotency_column: String,
    /// Create the table (`CREATE TABLE IF NOT EXISTS`, the key as primary
    /// key) at start. Default false: the table must exist and is checked
    /// against the mapping.
    #[serde(default)]
    pub create_table: bool,
    /// The columns and where each value comes from.
    pub columns: Vec<ColumnConfig>,
    /// The longest wait for a connection. Default 10 s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

fn default_idempotency_column() -> String {
    "idempotency_key".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl PostgresConfig {
    /// The columns written: `columns`, plus the idempotency column in append
    /// mode when it is not among them.
    pub fn all_columns(&self) -> Vec<ColumnConfig> {
        let mut cols = self.columns.clone();
        if self.mode == Mode::Append && !cols.iter().any(|c| c.name == self.idempotency_column) {
            cols.push(ColumnConfig {
                name: self.idempotency_column.clone(),
                sql_type: SqlType::Text,
                pointer: None,
                source: Some("idempotency-key".into()),
                required: true,
            });
        }
        cols
    }

    /// The columns that identify a row: the key (upsert) or the
    /// idempotency column (append).
    pub fn identity(&self) -> Vec<String> {
        match self.mode {
            Mode::Upsert => self.key.clone(),
            Mode::Append => vec![self.idempotency_column.clone()],
        }
    }

    /// The mapping of [`Self::all_columns`].
    ///
    /// # Errors
    ///
    /// As [`Mapping::new`].
    pub fn mapping(&self) -> Result<Mapping, String> {
        let identity = self.identity();
        let key: Vec<&str> = identity.iter().map(String::as_str).collect();
        let required: Vec<&str> = self.version.iter().map(String::as_str).collect();
        Mapping::new(&self.all_columns(), &required, &key)
    }

    /// Checks the settings (the caller prefixes `postgres.`).
    ///
    /// # Errors
    ///
    /// What is wrong, naming the key and the column.
    pub fn check(&self) -> Result<(), String> {
        if !self.url.is_empty() {
            self.url
                .parse::<tokio_postgres::Config>()
                .map_err(|e| format!("url does not parse as a PostgreSQL URL: {e}"))?;
        }
        quote_table(&self.table).map_err(|e| format!("table: {e}"))?;
        if self.columns.is_empty() {
            return Err("columns is empty: map at least one column".into());
        }
        let named = |c: &str| self.columns.iter().any(|x| x.name == c);
        match self.mode {
            Mode::Upsert => {
                if self.key.is_empty() {
                    return Err("key is empty: upsert needs the columns that identify a row".into());
                }
                if let Some(k) = self.key.iter().find(|k| !named(k)) {
                    return Err(format!(
                        "key names the column {k:?}, which is not in columns"
                    ));
                }
                if let Some(v) = &self.version {
                    let col = self.columns.iter().find(|c| &c.name == v).ok_or_else(|| {
                        format!("version names the column {v:?}, which is not in columns")
                    })?;
                    if self.key.contains(v) {
                        return Err(format!("version column {v:?} is also a key column"));
                    }
                    if matches!(col.sql_type, SqlType::Jsonb | SqlType::Boolean) {
                        return Err(format!(
                            "version column {v:?} is {}; it must be a type with an order (bigint, integer, double, numeric, timestamptz, text)",
                            col.sql_type.sql()
                        ));
                    }
                }
            }
            Mode::Append => {
                if !self.key.is_empty() || self.version.is_some() {
                    return Err("key and version apply to mode = \"upsert\"; append mode deduplicates on idempotency_column".into());
                }
            }
        }
        let mapping = self.mapping().map_err(|e| format!("columns: {e}"))?;
        if let Some(c) = mapping
            .columns()
            .find(|c| c.sql_type == SqlType::Jsonb && self.identity().contains(&c.name))
        {
            return Err(format!(
                "key column {:?} is jsonb; use a scalar type",
                c.name
            ));
        }
        Ok(())
    }
}

/// `"name"` or `"schema"."name"`, quoted as SQL identifiers.
fn quote_table(table: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    if table.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "{table:?} is not a table name (name, or schema.name)"
        ));
    }
    Ok(parts.iter().map(|p| quote(p)).collect::<Vec<_>>().join("."))
}

/// `id` as a quoted SQL identifier.
fn quote(id: &str) -> String {
    format!("\"{}\"", id.replace('"', "\"\""))
}

/// The element type of the array a column is sent as.
fn array_type(t: SqlType) -> &'static str {
    match t {
        SqlType::Text | SqlType::Numeric => "text",
        SqlType::Bigint => "int8",
        SqlType::Integer => "int4",
        SqlType::Double => "float8",
        SqlType::Boolean => "bool",
        SqlType::Timestamptz => "timestamptz",
        SqlType::Jsonb => "jsonb",
    }
}

/// The SQL text of the statements, made once from the config.
#[derive(Debug, Clone)]
struct Sql {
    /// The rows as a plain `INSERT`: tried first while batches are new rows.
    insert: String,
    /// The rows as `INSERT ... ON CONFLICT`.
    write: String,
    delete: Option<String>,
    cas: String,
}

fn join<T>(items: impl Iterator<Item = T>, f: impl Fn(T) -> String) -> String {
    items.map(f).collect::<Vec<_>>().join(", ")
}

/// The select list `unnest($1::text[]), ...` over `cols`, casting what is
/// sent as text (numeric). In the select list, not in FROM: the arrays are
/// read in step, row by row (PostgreSQL 10 and later), where `FROM
/// unnest(...)` first copies every row into a tuplestore.
fn unnest(cols: &[&ColumnConfig]) -> String {
    join(cols.iter().enumerate(), |(i, c)| match c.sql_type {
        SqlType::Numeric => format!("unnest(${}::text[])::numeric", i + 1),
        t => format!("unnest(${}::{}[])", i + 1, array_type(t)),
    })
}

impl Sql {
    fn new(config: &PostgresConfig, table: &str) -> Sql {
        let cols = config.all_columns();
        let all: Vec<&ColumnConfig> = cols.iter().collect();
        let identity = config.identity();
        let names = join(all.iter(), |c| quote(&c.name));
        let select = unnest(&all);
        let conflict = join(identity.iter(), |c| quote(c));
        let rest: Vec<&&ColumnConfig> =
            all.iter().filter(|c| !identity.contains(&c.name)).collect();
        let action = if config.mode == Mode::Append || rest.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            let sets = join(rest.iter(), |c| {
                format!("{0} = excluded.{0}", quote(&c.name))
            });
            let when = match &config.version {
                Some(v) => format!("t.{0} IS NULL OR excluded.{0} > t.{0}", quote(v)),
                None => format!(
                    "ROW({}) IS DISTINCT FROM ROW({})",
                    join(rest.iter(), |c| format!("t.{}", quote(&c.name))),
                    join(rest.iter(), |c| format!("excluded.{}", quote(&c.name)))
                ),
            };
            format!("DO UPDATE SET {sets} WHERE {when}")
        };
        let insert = format!("INSERT INTO {table} ({names}) SELECT {select}");
        let write = format!(
            "INSERT INTO {table} AS t ({names}) SELECT {select} ON CONFLICT ({conflict}) {action}"
        );
        let delete = (config.mode == Mode::Upsert).then(|| {
            let keys: Vec<&ColumnConfig> = identity
                .iter()
                .filter_map(|k| cols.iter().find(|c| &c.name == k))
                .collect();
            format!(
                "DELETE FROM {table} AS t WHERE ({}) IN (SELECT {})",
                join(keys.iter(), |c| format!("t.{}", quote(&c.name))),
                unnest(&keys)
            )
        });
        let cas = format!(
            "INSERT INTO {OFFSETS_TABLE} AS o (sink, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sink, topic, partition) DO UPDATE SET next_offset = excluded.next_offset \
             WHERE o.next_offset = $5"
        );
        Sql {
            insert,
            write,
            delete,
            cas,
        }
    }
}

/// A failed attempt at a batch.
enum Failure {
    /// Retried after a backoff; `reconnect`: the connection is gone, so
    /// the position must be read again.
    Retry {
        code: &'static str,
        message: String,
        reconnect: bool,
    },
    /// A data or constraint error in the plain `INSERT` (`unique`: a
    /// unique violation, most likely a row that is there already): write
    /// the batch again with `ON CONFLICT`.
    NotPlain { unique: bool },
    /// A data or constraint error in the batch statement: bisect.
    Bisect,
    /// The position is not where the batch was read: read it again.
    Moved,
    /// Asked to stop while the dead letters waited for Kafka.
    Stopped,
    /// Dead letters could not be written.
    Fatal(SinkError),
}

/// How PostgreSQL's error `e` is handled; see the module docs.
fn classify(e: &tokio_postgres::Error) -> Failure {
    let Some(db) = e.as_db_error() else {
        return Failure::Retry {
            code: "connection",
            message: error_text(e),
            reconnect: true,
        };
    };
    let sqlstate = db.code().code();
    let (code, reconnect) = match &sqlstate[..2] {
        "40" => ("serialization", false),
        "08" | "53" | "57" | "58" => ("connection", true),
        _ => ("postgres", false),
    };
    Failure::Retry {
        code,
        message: format!("{} (SQLSTATE {sqlstate})", db.message()),
        reconnect,
    }
}

/// A data exception (class 22) or constraint violation (class 23): the
/// record's fault.
fn record_fault(e: &tokio_postgres::Error) -> Option<(&'static str, String, String)> {
    let db = e.as_db_error()?;
    let code = match &db.code().code()[..2] {
        "22" => "data",
        "23" => "constraint",
        _ => return None,
    };
    let mut message = db.message().to_owned();
    if let Some(detail) = db.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Some((code, db.code().code().to_owned(), message))
}

/// One compacted record: its row, and whether it deletes (a tombstone).
struct Op {
    index: usize,
    row: Row,
    delete: bool,
}

/// A record that goes to the dead-letter topic: index, code, SQLSTATE, message.
type Refused = (usize, &'static str, Option<String>, String);

/// A batch made ready for the database by [`Planner::plan`].
pub(crate) struct Plan {
    ops: Vec<Op>,
    refused: Vec<Refused>,
    /// Records dropped by compaction.
    compacted: u64,
    /// Tombstones in append mode.
    skipped: u64,
}

/// Turns records into the rows of a [`Plan`]. It reads nothing but the
/// records, so a sink can plan its next batch on another thread while this
/// one is written.
pub(crate) struct Planner {
    mapping: Mapping,
    /// The indexes of the identity columns (the key, or the idempotency
    /// column), in the mapping.
    identity: Vec<usize>,
    /// The index of the version column.
    version: Option<usize>,
    /// `mode = "append"`.
    append: bool,
}

impl Planner {
    /// Maps and compacts `records`; see the module docs.
    pub(crate) fn plan(&self, records: &[LogRecord]) -> Plan {
        let append = self.append;
        let mut keyed = Vec::with_capacity(records.len());
        let mut refused = Vec::new();
        let mut skipped = 0;
        for (index, r) in records.iter().enumerate() {
            let delete = r.record.value.is_none();
            if delete && append {
                skipped += 1;
                continue;
            }
            match self.mapping.row(r) {
                Ok(row) => keyed.push((
                    Mapping::identity(&row, &self.identity),
                    Op { index, row, delete },
                )),
                Err(e) => refused.push((index, "mapping", None, e.0)),
            }
        }
        let version = self.version;
        let (ops, compacted) = compact(keyed, |old: &Op, new: &Op| {
            if append {
                return false;
            }
            match version {
                Some(v) if !old.delete && !new.delete => {
                    new.row[v].compare(&old.row[v]) != Some(std::cmp::Ordering::Less)
                }
                _ => true,
            }
        });
        Plan {
            ops,
            refused,
            compacted: compacted as u64,
            skipped,
        }
    }
}

/// How an attempt writes the rows of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// A plain `INSERT`: the batch's rows are all new, else it fails.
    Plain,
    /// `INSERT ... ON CONFLICT`.
    OnConflict,
    /// `INSERT ... ON CONFLICT` under savepoints, halving down to the
    /// records PostgreSQL refuses.
    Bisect,
}

/// Whether the next batch is tried as a plain `INSERT` first.
///
/// A plain `INSERT` costs PostgreSQL about a third less than `INSERT ...
/// ON CONFLICT`, which probes the unique index before each row and then
/// inserts into it, but fails as soon as one row of the batch is there
/// already. So a batch is tried plainly while the batches before it were
/// new rows; after a unique violation the next 1, then 2, 4 ... up to 64
/// batches go straight to `ON CONFLICT` (a table of updates wastes at most
/// one plain try in 65 batches).
#[derive(Debug, Default)]
struct PlainFirst {
    /// Batches left to write with `ON CONFLICT` before the next plain try.
    skip: u32,
    /// The skip after the next unique violation (doubles each time).
    backoff: u32,
}

impl PlainFirst {
    /// The longest run of batches written with `ON CONFLICT` between two
    /// plain tries.
    const MAX_SKIP: u32 = 64;

    /// Whether to try the next batch plainly (counts it when not).
    fn try_plain(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// A plain try wrote its batch.
    fn inserted(&mut self) {
        self.backoff = 0;
    }

    /// A plain try met a row that is there already.
    fn conflicted(&mut self) {
        self.backoff = (self.backoff * 2).clamp(1, Self::MAX_SKIP);
        self.skip = self.backoff;
    }
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    insert: Statement,
    write: Statement,
    delete: Option<Statement>,
    cas: Statement,
}

/// Writes batches into one table; see the module docs.
pub struct PostgresWriter {
    sink: String,
    topic: String,
    config: PostgresConfig,
    pg: tokio_postgres::Config,
    target: String,
    table: String,
    types: Vec<SqlType>,
    planner: Arc<Planner>,
    sql: Sql,
    plain: PlainFirst,
    conn: Option<Conn>,
}

impl PostgresWriter {
    /// A writer of `config` for sink `sink` reading `topic`; connects later.
    ///
    /// # Errors
    ///
    /// When the config does not check (see [`PostgresConfig::check`]).
    pub fn new(sink: &str, topic: &str, config: PostgresConfig) -> Result<Self, String> {
        config.check()?;
        if config.url.is_empty() {
            return Err("postgres.url is not set: set it, or pass run --postgres-url (TIDEWATER_POSTGRES_URL)".into());
        }
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| format!("{e}"))?;
        pg.connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name(format!("tidewater sink {sink}"));
        let target = describe_target(&pg);
        let table = quote_table(&config.table)?;
        let mapping = config.mapping()?;
        let types = mapping.columns().map(|c| c.sql_type).collect();
        let identity = config
            .identity()
            .iter()
            .filter_map(|k| mapping.index(k))
            .collect();
        let version = config.version.as_deref().and_then(|v| mapping.index(v));
        let sql = Sql::new(&config, &table);
        let append = config.mode == Mode::Append;
        Ok(PostgresWriter {
            sink: sink.to_owned(),
            topic: topic.to_owned(),
            config,
            pg,
            target,
            table,
            types,
            planner: Arc::new(Planner {
                mapping,
                identity,
                version,
                append,
            }),
            sql,
            plain: PlainFirst::default(),
            conn: None,
        })
    }

    /// The statement that writes rows (for the docs and the tests).
    pub fn write_sql(&self) -> &str {
        &self.sql.write
    }

    async fn client(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.pg.connect(NoTls).await?;
        let sink = self.sink.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%sink, error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    async fn connect(&mut self) -> Result<&Conn, Failure> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = self.client().await.map_err(|e| classify(&e))?;
            let prepare = async {
                let insert = client.prepare(&self.sql.insert).await?;
                let write = client.prepare(&self.sql.write).await?;
                let delete = match &self.sql.delete {
                    Some(d) => Some(client.prepare(d).await?),
                    None => None,
                };
                let cas = client.prepare(&self.sql.cas).await?;
                Ok::<_, tokio_postgres::Error>((insert, write, delete, cas))
            };
            let (insert, write, delete, cas) = prepare.await.map_err(|e| classify(&e))?;
            self.conn = Some(Conn {
                client,
                insert,
                write,
                delete,
                cas,
            });
        }
        Ok(self.conn.as_ref().expect("connected above"))
    }

    /// Connects, creates the offsets table, creates (`create_table`) or
    /// checks the table against the mapping.
    ///
    /// # Errors
    ///
    /// What does not fit, naming the table and the column; or that the
    /// database cannot be reached.
    pub async fn prepare(&mut self) -> Result<(), String> {
        let at = &self.target;
        let client = tokio::time::timeout(self.config.connect_timeout, self.client())
            .await
            .map_err(|_| {
                format!(
                    "cannot connect to PostgreSQL at {at} within {:?}",
                    self.config.connect_timeout
                )
            })?
            .map_err(|e| format!("cannot connect to PostgreSQL at {at}: {}", error_text(&e)))?;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (sink text NOT NULL, topic text NOT NULL, \
             partition integer NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (sink, topic, partition))"
        );
        execute_ddl(&client, &ddl)
            .await
            .map_err(|e| format!("creating {OFFSETS_TABLE} at {at}: {e}"))?;
        if self.config.create_table {
            execute_ddl(&client, &self.create_table_sql())
                .await
                .map_err(|e| format!("creating table {} at {at}: {e}", self.config.table))?;
        }
        self.check_table(&client).await
    }

    fn create_table_sql(&self) -> String {
        let cols = self.config.all_columns();
        let identity = self.config.identity();
        let defs = join(cols.iter(), |c| {
            let not_null = if identity.contains(&c.name)
                || c.required
                || self.config.version.as_ref() == Some(&c.name)
            {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", quote(&c.name), c.sql_type.sql())
        });
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({defs}, PRIMARY KEY ({}))",
            self.table,
            join(identity.iter(), |c| quote(c))
        )
    }

    /// Every mapped column exists with a type the mapping can write, and a
    /// unique index covers exactly the identity columns.
    async fn check_table(&self, client: &Client) -> Result<(), String> {
        let t = &self.config.table;
        let (schema, name) = match t.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, t.as_str()),
        };
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = coalesce($1::text, current_schema()) AND table_name = $2::text",
                &[&schema, &name],
            )
            .await
            .map_err(|e| format!("reading the columns of {t}: {}", error_text(&e)))?;
        if rows.is_empty() {
            return Err(format!(
                "table {t} does not exist at {}: create it, or set create_table = true",
                self.target
            ));
        }
        let found: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for c in self.planner.mapping.columns() {
            match found.get(&c.name) {
                None => {
                    return Err(format!(
                        "table {t} has no column {:?}, which the mapping writes: add it (ALTER TABLE {t} ADD COLUMN {} {}), or change the mapping",
                        c.name,
                        quote(&c.name),
                        c.sql_type.sql()
                    ));
                }
                Some(dt) if !c.sql_type.accepts(dt) => {
                    return Err(format!(
                        "column {:?} of table {t} is {dt}, but the mapping writes {}",
                        c.name,
                        c.sql_type.sql()
                    ));
                }
                Some(_) => {}
            }
        }
        self.check_unique_index(client).await
    }

    async fn check_unique_index(&self, client: &Client) -> Result<(), String> {
        let t = &self.config.table;
        let rows = client
            .query(
                "SELECT array_agg(a.attname::text) FROM pg_index ix \
                 JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ANY(ix.indkey) \
                 WHERE ix.indrelid = $1::text::regclass AND ix.indisunique AND ix.indpred IS NULL \
                 GROUP BY ix.indexrelid",
                &[&self.table],
            )
            .await
            .map_err(|e| format!("reading the indexes of {t}: {}", error_text(&e)))?;
        let mut want = self.config.identity();
        want.sort();
        let covered = rows.iter().any(|r| {
            let mut cols: Vec<String> = r.get(0);
            cols.sort();
            cols == want
        });
        if covered {
            Ok(())
        } else {
            Err(format!(
                "table {t} has no unique index on ({}), which ON CONFLICT needs: CREATE UNIQUE INDEX ON {t} ({})",
                want.join(", "),
                join(want.iter(), |c| quote(c))
            ))
        }
    }

    /// The sink's positions, per partition, as PostgreSQL has them.
    ///
    /// # Errors
    ///
    /// Why they cannot be read (for the unhealthy status).
    pub(crate) async fn positions(&mut self) -> Result<BTreeMap<u32, u64>, String> {
        let (sink, topic, target) = (self.sink.clone(), self.topic.clone(), self.target.clone());
        let conn = self
            .connect()
            .await
            .map_err(|f| failure_text(&target, &f))?;
        let rows = conn
            .client
            .query(
                &format!("SELECT partition, next_offset FROM {OFFSETS_TABLE} WHERE sink = $1 AND topic = $2"),
                &[&sink, &topic],
            )
            .await;
        match rows {
            Ok(rows) => Ok(rows
                .iter()
                .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i64>(1) as u64))
                .collect()),
            Err(e) => {
                self.conn = None;
                Err(format!("{target}: {}", error_text(&e)))
            }
        }
    }

    /// Moves the positions back to `targets` (never forward), in one transaction.
    ///
    /// # Errors
    ///
    /// Why not, for the replay status.
    pub(crate) async fn rewind(&mut self, targets: &BTreeMap<u32, u64>) -> Result<(), String> {
        let (sink, topic, target) = (self.sink.clone(), self.topic.clone(), self.target.clone());
        self.connect()
            .await
            .map_err(|f| failure_text(&target, &f))?;
        let conn = self.conn.as_mut().expect("connected above");
        let sql = format!(
            "UPDATE {OFFSETS_TABLE} SET next_offset = LEAST(next_offset, $4) WHERE sink = $1 AND topic = $2 AND partition = $3"
        );
        let result = async {
            let txn = conn.client.transaction().await?;
            for (p, at) in targets {
                txn.execute(&sql, &[&sink, &topic, &(*p as i32), &(*at as i64)])
                    .await?;
            }
            txn.commit().await
        }
        .await;
        result.map_err(|e| format!("{target}: {}", error_text(&e)))
    }

    /// What plans this writer's batches.
    pub(crate) fn planner(&self) -> Arc<Planner> {
        Arc::clone(&self.planner)
    }

    /// Delivers `records` (one partition, read at `ctx.from`; `plan`: their
    /// plan when made ahead by [`Self::planner`]): retries what is retried
    /// until it commits, the position moved, or `ctx.stop`.
    ///
    /// # Errors
    ///
    /// When dead letters cannot be written.
    pub(crate) async fn deliver(
        &mut self,
        ctx: &Context<'_>,
        records: &[LogRecord],
        plan: Option<Plan>,
        backoff: &mut Backoff,
    ) -> Result<Outcome, SinkError> {
        let plan = plan.unwrap_or_else(|| self.planner.plan(records));
        let mut counts = Delivered::default();
        let mut write = if plan.ops.iter().any(|o| !o.delete) && self.plain.try_plain() {
            Write::Plain
        } else {
            Write::OnConflict
        };
        loop {
            match self.attempt(ctx, records, &plan, write).await {
                Ok(mut done) => {
                    if write == Write::Plain {
                        self.plain.inserted();
                    }
                    done.codes.append(&mut counts.codes);
                    return Ok(Outcome::Done(done));
                }
                Err(Failure::NotPlain { unique }) => {
                    tracing::debug!(sink = %self.sink, unique, "the plain INSERT of the batch was refused; writing it with ON CONFLICT");
                    if unique {
                        self.plain.conflicted();
                    }
                    write = Write::OnConflict;
                }
                Err(Failure::Bisect) => write = Write::Bisect,
                Err(Failure::Moved) => return Ok(Outcome::Reread(counts)),
                Err(Failure::Stopped) => return Ok(Outcome::Stopped(counts)),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry {
                    code,
                    message,
                    reconnect,
                }) => {
                    counts.count(code);
                    self.conn = None;
                    tracing::debug!(sink = %self.sink, code, %message, "postgres batch failed; retrying");
                    ctx.control
                        .set_unhealthy(Some(format!("PostgreSQL at {}: {message}", self.target)));
                    if !nap(backoff.next(None), ctx.stop).await {
                        return Ok(Outcome::Stopped(counts));
                    }
                    if reconnect {
                        return Ok(Outcome::Reread(counts));
                    }
                }
            }
        }
    }

    /// One transaction: rows, position (compare-and-set), dead letters,
    /// COMMIT. A failure other than [`Failure::Retry`] (which drops the
    /// connection) rolls the transaction back.
    async fn attempt(
        &mut self,
        ctx: &Context<'_>,
        records: &[LogRecord],
        plan: &Plan,
        write: Write,
    ) -> Result<Delivered, Failure> {
        self.connect().await?;
        let conn = self.conn.as_ref().expect("connected above");
        let columns = (self.types.as_slice(), self.planner.identity.as_slice());
        let result = transaction(conn, ctx, records, plan, columns, write).await;
        if let Err(f) = &result
            && !matches!(f, Failure::Retry { .. })
            && conn.client.batch_execute("ROLLBACK").await.is_err()
        {
            self.conn = None;
        }
        result
    }
}

/// The transaction of [`PostgresWriter::attempt`]. Apart from bisecting,
/// it takes two round trips: BEGIN, the position's compare-and-set and the
/// rows' statements go out together (pipelined), then COMMIT.
async fn transaction(
    conn: &Conn,
    ctx: &Context<'_>,
    records: &[LogRecord],
    plan: &Plan,
    (types, identity): (&[SqlType], &[usize]),
    write: Write,
) -> Result<Delivered, Failure> {
    let client = &conn.client;
    let ops: Vec<&Op> = plan.ops.iter().collect();
    let mut refused = plan.refused.clone();
    let next = records.last().map_or(ctx.from, |r| r.offset + 1);
    let params: [&(dyn ToSql + Sync); 5] = [
        &ctx.sink,
        &ctx.topic,
        &(ctx.partition as i32),
        &(next as i64),
        &(ctx.from as i64),
    ];
    let changed = if write == Write::Bisect {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| classify(&e))?;
        let cas = client
            .execute(&conn.cas, &params)
            .await
            .map_err(|e| classify(&e))?;
        if cas == 0 {
            return Err(Failure::Moved);
        }
        let stmts = (&conn.write, conn.delete.as_ref());
        write_bisecting(client, stmts, types, identity, &ops, &mut refused).await?
    } else {
        let rows = if write == Write::Plain {
            &conn.insert
        } else {
            &conn.write
        };
        let stmts = (rows, conn.delete.as_ref());
        // In this order on the wire (`biased`): a statement after one that
        // failed fails too (25P02), so BEGIN's error explains the rest, and
        // a record's fault in the rows comes before what the position says.
        let (begin, cas, rows) = tokio::join!(
            biased;
            client.batch_execute("BEGIN"),
            client.execute(&conn.cas, &params),
            write_ops(client, stmts, types, identity, &ops),
        );
        begin.map_err(|e| classify(&e))?;
        let rows = match rows {
            Err(e) => match (record_fault(&e), write) {
                (Some((_, sqlstate, _)), Write::Plain) => {
                    return Err(Failure::NotPlain {
                        unique: sqlstate == "23505",
                    });
                }
                (Some(_), _) => return Err(Failure::Bisect),
                (None, _) => Err(e),
            },
            Ok(n) => Ok(n),
        };
        if cas.map_err(|e| classify(&e))? == 0 {
            return Err(Failure::Moved);
        }
        rows.map_err(|e| classify(&e))?
    };
    let dead = refused.len() as u64;
    if !refused.is_empty() {
        let letters = dead_letters(ctx.sink, records, refused);
        match ctx
            .dead_letters
            .write(ctx.sink, ctx.topic, ctx.partition, letters, ctx.stop)
        {
            Ok(true) => {}
            Ok(false) => return Err(Failure::Stopped),
            Err(e) => return Err(Failure::Fatal(e)),
        }
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| classify(&e))?;
    let written = plan.ops.len() as u64 - (dead - plan.refused.len() as u64);
    Ok(Delivered {
        records: records.len() as u64,
        changed,
        unchanged: plan.compacted + written.saturating_sub(changed),
        skipped: plan.skipped,
        dead_lettered: dead,
        codes: BTreeMap::new(),
    })
}

/// Writes `ops` with one statement for the rows and one for the deletes
/// (pipelined, in that order); returns the rows changed.
async fn write_ops(
    client: &Client,
    (write, delete): (&Statement, Option<&Statement>),
    types: &[SqlType],
    identity: &[usize],
    ops: &[&Op],
) -> Result<u64, tokio_postgres::Error> {
    let upserts: Vec<&Row> = ops.iter().filter(|o| !o.delete).map(|o| &o.row).collect();
    let deletes: Vec<&Row> = ops.iter().filter(|o| o.delete).map(|o| &o.row).collect();
    let rows = async {
        if upserts.is_empty() {
            return Ok(0);
        }
        let params: Vec<Box<dyn ToSql + Sync + '_>> = types
            .iter()
            .enumerate()
            .map(|(i, t)| column_param(&upserts, i, *t))
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        client.execute(write, &refs).await
    };
    let gone = async {
        let (Some(delete), false) = (delete, deletes.is_empty()) else {
            return Ok(0);
        };
        let params: Vec<Box<dyn ToSql + Sync + '_>> = identity
            .iter()
            .map(|&i| column_param(&deletes, i, types[i]))
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        client.execute(delete, &refs).await
    };
    let (rows, gone) = tokio::join!(biased; rows, gone);
    Ok(rows? + gone?)
}

/// As [`write_ops`], halving under savepoints down to the records
/// PostgreSQL refuses (added to `refused`); the rest is written.
async fn write_bisecting(
    client: &Client,
    stmts: (&Statement, Option<&Statement>),
    types: &[SqlType],
    identity: &[usize],
    ops: &[&Op],
    refused: &mut Vec<Refused>,
) -> Result<u64, Failure> {
    let mut changed = 0;
    let mut stack: Vec<&[&Op]> = vec![ops];
    while let Some(chunk) = stack.pop() {
        if chunk.is_empty() {
            continue;
        }
        client
            .batch_execute("SAVEPOINT tidewater_bisect")
            .await
            .map_err(|e| classify(&e))?;
        match write_ops(client, stmts, types, identity, chunk).await {
            Ok(n) => {
                client
                    .batch_execute("RELEASE SAVEPOINT tidewater_bisect")
                    .await
                    .map_err(|e| classify(&e))?;
                changed += n;
            }
            Err(e) => match record_fault(&e) {
                Some((code, sqlstate, message)) => {
                    client
                        .batch_execute(
                            "ROLLBACK TO SAVEPOINT tidewater_bisect; RELEASE SAVEPOINT tidewater_bisect",
                        )
                        .await
                        .map_err(|e| classify(&e))?;
                    if chunk.len() == 1 {
                        refused.push((chunk[0].index, code, Some(sqlstate), message));
                    } else {
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        stack.push(b);
                        stack.push(a);
                    }
                }
                None => return Err(classify(&e)),
            },
        }
    }
    Ok(changed)
}

/// Column `i` of `rows` as the typed array its statement parameter takes.
fn column_param<'a>(rows: &[&'a Row], i: usize, t: SqlType) -> Box<dyn ToSql + Sync + 'a> {
    let col = rows.iter().map(move |r| &r[i]);
    match t {
        SqlType::Text | SqlType::Numeric => Box::new(
            col.map(|v| match v {
                SqlValue::Text(s) | SqlValue::Numeric(s) => Some(s.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>(),
        ),
        SqlType::Bigint => Box::new(
            col.map(|v| match v {
                SqlValue::Bigint(x) => Some(*x),
                _ => None,
            })
            .collect::<Vec<_>>(),
        ),
        SqlType::Integer => Box::new(
            col.map(|v| match v {
                SqlValue::Integer(x) => Some(*x),
                _ => None,
            })
            .collect::<Vec<_>>(),
        ),
        SqlType::Double => Box::new(
            col.map(|v| match v {
                SqlValue::Double(x) => Some(*x),
                _ => None,
            })
            .collect::<Vec<_>>(),
        ),
        SqlType::Boolean => Box::new(
            col.map(|v| match v {
                SqlValue::Boolean(x) => Some(*x),
                _ => None,
            })
            .collect::<Vec<_>>(),
        ),
        SqlType::Timestamptz => Box::new(
            col.map(|v| match v {
                SqlValue::Timestamptz(x) => Some(*x),
                _ => None,
            })
            .collect::<Vec<_>>(),
        ),
        SqlType::Jsonb => Box::new(
            col.map(|v| match v {
                SqlValue::Jsonb(x) => Some(x),
                _ => None,
            })
            .collect::<Vec<_>>(),
        ),
    }
}

/// The dead letters of `refused` records, in offset order.
fn dead_letters(
    sink: &str,
    records: &[LogRecord],
    mut refused: Vec<Refused>,
) -> Vec<(u64, Record)> {
    refused.sort_by_key(|r| r.0);
    refused
        .into_iter()
        .map(|(i, code, sqlstate, message)| {
            let input = &records[i];
            let mut r = dead_letter(input, code, &message, sink, "postgres", 1);
            if let Some(s) = sqlstate {
                r.headers
                    .push((dlq_headers::SQLSTATE.to_owned(), s.into_bytes()));
            }
            (input.offset, r)
        })
        .collect()
}

/// `host:port/database` of a config, without the password.
fn describe_target(pg: &tokio_postgres::Config) -> String {
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", pg.get_dbname().unwrap_or(""))
}

/// An error's text with PostgreSQL's own message and SQLSTATE when it has
/// them, else with its causes (tokio-postgres's own text alone, "error
/// connecting to server" or "invalid configuration", does not say why).
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn failure_text(target: &str, f: &Failure) -> String {
    match f {
        Failure::Retry { message, .. } => format!("PostgreSQL at {target}: {message}"),
        _ => format!("PostgreSQL at {target}: unavailable"),
    }
}

/// Runs DDL, taking a concurrent creation of the same object as done.
async fn execute_ddl(client: &Client, sql: &str) -> Result<(), String> {
    match client.batch_execute(sql).await {
        Ok(()) => Ok(()),
        Err(e)
            if e.code()
                .is_some_and(|c| c.code() == "23505" || c.code() == "42P07") =>
        {
            Ok(())
        }
        Err(e) => Err(error_text(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> PostgresConfig {
        toml::from_str(&format!(
            r#"
url = "postgres://u:secret@db.example:5433/app"
table = "readings"
columns = [
  {{ name = "device", type = "text", pointer = "/device" }},
  {{ name = "t", type = "double", pointer = "/t" }},
  {{ name = "v", type = "bigint", pointer = "/v" }},
  {{ name = "price", type = "numeric", pointer = "/price" }},
]
{extra}
"#
        ))
        .unwrap()
    }

    #[test]
    fn upsert_with_a_version_updates_only_newer_rows() {
        let c = config("mode = \"upsert\"\nkey = [\"device\"]\nversion = \"v\"\n");
        c.check().unwrap();
        let sql = Sql::new(&c, &quote_table(&c.table).unwrap());
        assert_eq!(
            sql.write,
            "INSERT INTO \"readings\" AS t (\"device\", \"t\", \"v\", \"price\") \
             SELECT unnest($1::text[]), unnest($2::float8[]), unnest($3::int8[]), unnest($4::text[])::numeric \
             ON CONFLICT (\"device\") DO UPDATE SET \"t\" = excluded.\"t\", \"v\" = excluded.\"v\", \"price\" = excluded.\"price\" \
             WHERE t.\"v\" IS NULL OR excluded.\"v\" > t.\"v\""
        );
        assert_eq!(
            sql.delete.unwrap(),
            "DELETE FROM \"readings\" AS t WHERE (t.\"device\") IN (SELECT unnest($1::text[]))"
        );
        assert_eq!(
            sql.insert,
            "INSERT INTO \"readings\" (\"device\", \"t\", \"v\", \"price\") \
             SELECT unnest($1::text[]), unnest($2::float8[]), unnest($3::int8[]), unnest($4::text[])::numeric"
        );
    }

    #[test]
    fn after_a_row_that_was_there_plain_inserts_pause_for_1_2_4_up_to_64_batches() {
        let mut p = PlainFirst::default();
        assert!(p.try_plain());
        let mut pauses = Vec::new();
        for _ in 0..8 {
            p.conflicted();
            let mut skipped = 0;
            while !p.try_plain() {
                skipped += 1;
            }
            pauses.push(skipped);
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 64, 64]);
        // A plain insert that wrote its batch starts the pauses over.
        p.inserted();
        p.conflicted();
        assert!(!p.try_plain());
        assert!(p.try_plain());
    }

    #[test]
    fn upsert_without_a_version_skips_rows_that_would_not_change() {
        let c = config("mode = \"upsert\"\nkey = [\"device\", \"v\"]\n");
        let sql = Sql::new(&c, "\"readings\"");
        assert!(
            sql.write.ends_with(
                "ON CONFLICT (\"device\", \"v\") DO UPDATE SET \"t\" = excluded.\"t\", \"price\" = excluded.\"price\" \
                 WHERE ROW(t.\"t\", t.\"price\") IS DISTINCT FROM ROW(excluded.\"t\", excluded.\"price\")"
            ),
            "{}",
            sql.write
        );
    }

    #[test]
    fn append_adds_the_idempotency_column_and_does_nothing_on_conflict() {
        let c = config("");
        c.check().unwrap();
        let sql = Sql::new(&c, "\"readings\"");
        assert!(
            sql.write
                .contains("(\"device\", \"t\", \"v\", \"price\", \"idempotency_key\")")
        );
        assert!(
            sql.write
                .ends_with("ON CONFLICT (\"idempotency_key\") DO NOTHING"),
            "{}",
            sql.write
        );
        assert!(sql.delete.is_none());
    }

    #[test]
    fn bad_settings_name_the_key() {
        let refused = |extra: &str| config(extra).check().unwrap_err();
        assert_eq!(
            refused("mode = \"upsert\"\n"),
            "key is empty: upsert needs the columns that identify a row"
        );
        assert_eq!(
            refused("mode = \"upsert\"\nkey = [\"ts\"]\n"),
            "key names the column \"ts\", which is not in columns"
        );
        assert_eq!(
            refused("mode = \"upsert\"\nkey = [\"device\"]\nversion = \"device\"\n"),
            "version column \"device\" is also a key column"
        );
        assert!(
            refused("key = [\"device\"]\n")
                .starts_with("key and version apply to mode = \"upsert\"")
        );
        let mut c = config("");
        c.url = "postgres://u@h:notaport/d".into();
        assert!(c.check().unwrap_err().starts_with("url does not parse"));
        c = config("");
        c.table = "a.b.c".into();
        assert_eq!(
            c.check().unwrap_err(),
            "table: \"a.b.c\" is not a table name (name, or schema.name)"
        );
    }

    #[test]
    fn the_target_hides_the_password() {
        let pg: tokio_postgres::Config = config("").url.parse().unwrap();
        assert_eq!(describe_target(&pg), "db.example:5433/app");
    }
}
