//! The ledger: one JSON line per event the simulators injected and the broker or the ingress
//! confirmed. It is what the report accounts for, event by event.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One injected event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The flow that should carry it.
    pub flow: String,
    /// CloudEvents `id`.
    pub id: String,
    /// The business key the destinations record it under (`externalReference` after the transform).
    pub key: String,
    /// CloudEvents `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Routes that should receive it (the flow's `when` predicates, evaluated on the generated data).
    pub routes: Vec<String>,
    /// False for deliberately broken events (contract violations): they belong in the DLQ.
    pub valid: bool,
    /// Ordering key, for ordered flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
    /// Position within its ordering key (1, 2, 3 ...), for ordered flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seq: Option<u64>,
    /// When it was confirmed, RFC 3339.
    pub injected_at: String,
}

/// Appends entries to a ledger file, flushing each line.
pub struct Writer {
    file: std::fs::File,
}

impl Writer {
    /// Opens `path` for appending, creating it (and its directory) if needed.
    pub fn append(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self { file })
    }

    /// Writes one entry as a line.
    pub fn write(&mut self, entry: &Entry) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        Ok(())
    }
}

/// Reads every entry of a ledger file, in injection order.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open the ledger {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))?;
        out.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_order() {
        let dir = std::env::temp_dir().join(format!("ledger-test-{}", std::process::id()));
        let path = dir.join("ledger.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut w = Writer::append(&path).unwrap();
        let a = Entry {
            flow: "f".into(),
            id: "1".into(),
            key: "K1".into(),
            event_type: "t".into(),
            routes: vec!["erp".into()],
            valid: true,
            order_key: Some("S1".into()),
            order_seq: Some(1),
            injected_at: "2026-01-01T00:00:00Z".into(),
        };
        let b = Entry {
            id: "2".into(),
            key: "K2".into(),
            valid: false,
            order_key: None,
            order_seq: None,
            ..a.clone()
        };
        w.write(&a).unwrap();
        w.write(&b).unwrap();
        assert_eq!(read(&path).unwrap(), vec![a, b]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
