//! The tables' side of the store: recovery at open, folding journal groups
//! into `kv` and `log`, and reading a log's bounds.

use super::*;

pub(super) fn journal_err(entry: u64, e: impl std::fmt::Display) -> String {
    format!("journal entry {entry} does not decode: {e}")
}

/// At open: create the tables, fold into them what the journal holds beyond
/// what they say they hold, and empty the journal. Returns the last entry
/// folded.
pub(super) fn recover(tables: &Database, journal: &Database) -> Result<u64, String> {
    let txn = tables.begin_write().map_err(|e| e.to_string())?;
    let folded = {
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let folded = meta
            .get(FOLDED)
            .map_err(|e| e.to_string())?
            .map_or(0, |v| v.value());
        folded
    };
    let mut groups = Vec::new();
    {
        let read = journal.begin_write().map_err(|e| e.to_string())?;
        {
            let j = read.open_table(JOURNAL).map_err(|e| e.to_string())?;
            for item in j.range(folded + 1..).map_err(|e| e.to_string())? {
                let (k, v) = item.map_err(|e| e.to_string())?;
                let group = decode_group(v.value()).map_err(|e| journal_err(k.value(), e))?;
                groups.push((k.value(), group));
            }
        }
        // Creates the journal table on a first start.
        read.commit().map_err(|e| e.to_string())?;
    }
    let last = fold_into(&txn, groups)?.unwrap_or(folded);
    txn.commit().map_err(|e| e.to_string())?;
    // Everything is in the tables now: empty the journal.
    let txn = journal.begin_write().map_err(|e| e.to_string())?;
    txn.open_table(JOURNAL)
        .map_err(|e| e.to_string())?
        .retain(|_, _| false)
        .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    Ok(last)
}

/// One committed group: its journal entry and its submissions.
pub(super) type Group = (u64, Vec<(String, Vec<Write>)>);

/// Apply `groups` (in entry order) to the tables in `txn` (creating them
/// when they do not exist) and record the last entry as folded. Returns
/// that entry (`None`: no group).
///
/// Namespaces never share a key, so each one's writes are applied together
/// (in their order), one namespace after the other: the B-trees are then
/// written in key order, a leaf at a time. Within a namespace, the key-value
/// writes of the whole fold are coalesced first ([`coalesce`]): only each
/// key's last write reaches the table, so a value put and deleted again
/// before the fold (a broadcast's buffered message once stable) costs one
/// removal, and a key rewritten by every submission (a protocol's `meta`)
/// one insertion. Logs and key-values never interact, so the logs' writes
/// are applied in their order beside them.
pub(super) fn fold_into(txn: &WriteTransaction, groups: Vec<Group>) -> Result<Option<u64>, String> {
    let mut kv = txn.open_table(KV).map_err(|e| e.to_string())?;
    let mut log = txn.open_table(LOG).map_err(|e| e.to_string())?;
    let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
    let last = groups.last().map(|(entry, _)| *entry);
    let mut spaces: BTreeMap<String, Vec<Vec<Write>>> = BTreeMap::new();
    for (_, group) in groups {
        for (ns, writes) in group {
            spaces.entry(ns).or_default().push(writes);
        }
    }
    for (ns, submissions) in spaces {
        let (values, logs) = coalesce(&submissions);
        for (key, value) in values {
            match value {
                Some(v) => kv.insert((ns.as_str(), key), v),
                None => kv.remove((ns.as_str(), key)),
            }
            .map_err(|e| e.to_string())?;
        }
        apply(&mut kv, &mut log, &ns, logs).map_err(|e| e.to_string())?;
    }
    if let Some(last) = last {
        meta.insert(FOLDED, last).map_err(|e| e.to_string())?;
    }
    Ok(last)
}

/// One namespace's `submissions` (in order) as the last write of each key
/// (`None`: deleted), in key order, and the log writes in their order:
/// applying the two gives the tables what applying every write in order
/// gives.
fn coalesce(submissions: &[Vec<Write>]) -> (BTreeMap<&str, Option<&[u8]>>, Vec<&Write>) {
    let mut values = BTreeMap::new();
    let mut logs = Vec::new();
    for w in submissions.iter().flatten() {
        match w {
            Write::Put { key, value } => {
                values.insert(key.as_str(), Some(value.as_slice()));
            }
            Write::Delete { key } => {
                values.insert(key.as_str(), None);
            }
            other => logs.push(other),
        }
    }
    (values, logs)
}

/// `(first, last)` of log `name` of `ns` in the `log` table.
pub(super) fn table_bounds(
    log: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    ns: &str,
    name: &str,
) -> Result<LogBounds, redb::StorageError> {
    let mut r = log.range((ns, name, 0u64)..=(ns, name, u64::MAX))?;
    let first = r.next().transpose()?;
    let last = r.next_back().transpose()?;
    Ok(first.map(|(f, _)| {
        let f = f.value().2;
        (f, last.map_or(f, |(l, _)| l.value().2))
    }))
}

pub(super) fn apply<'w>(
    kv: &mut redb::Table<(&str, &str), &[u8]>,
    log: &mut redb::Table<(&str, &str, u64), &[u8]>,
    ns: &str,
    writes: impl IntoIterator<Item = &'w Write>,
) -> Result<(), redb::StorageError> {
    for w in writes {
        match w {
            Write::Put { key, value } => {
                kv.insert((ns, key.as_str()), value.as_slice())?;
            }
            Write::Delete { key } => {
                kv.remove((ns, key.as_str()))?;
            }
            Write::Append {
                log: name,
                first,
                records,
            } => {
                for (i, r) in records.iter().enumerate() {
                    log.insert((ns, name.as_str(), first + i as u64), r.as_slice())?;
                }
            }
            Write::TruncateFrom { log: name, index } => {
                log.retain_in(
                    (ns, name.as_str(), *index)..=(ns, name.as_str(), u64::MAX),
                    |_, _| false,
                )?;
            }
            Write::TruncateBefore { log: name, index } => {
                log.retain_in(
                    (ns, name.as_str(), 0u64)..(ns, name.as_str(), *index),
                    |_, _| false,
                )?;
            }
        }
    }
    Ok(())
}
