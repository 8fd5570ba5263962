//! Tests of the redb store: the contract, group commit, folding, recovery.

use super::super::contract;
use super::*;

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("troupe-redb-{}", uuid::Uuid::new_v4()))
}

#[test]
fn redb_store_keeps_the_contract_and_survives_reopening() {
    let d = dir();
    {
        let s = RedbStore::open_dir(&d).unwrap();
        futures::executor::block_on(contract::exercise(&s));
        futures::executor::block_on(s.submit("z", vec![contract::append("log", 10, 5)]).wait())
            .unwrap();
    }
    let s = RedbStore::open_dir(&d).unwrap();
    let z = s.load("z").unwrap();
    assert_eq!(z.log_bounds("log"), Some((10, 14)));
    let recs: Vec<u64> = z
        .log("log")
        .map(|(_, r)| u64::from_le_bytes(r.try_into().unwrap()))
        .collect();
    assert_eq!(recs, vec![10, 11, 12, 13, 14]);
    // The namespace "a" is not a prefix match of "ab" and the reverse.
    assert_eq!(s.load("a").unwrap().log_bounds("log"), Some((2, 4)));
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused_with_the_path() {
    let d = dir();
    let _s = RedbStore::open_dir(&d).unwrap();
    let e = RedbStore::open_dir(&d).unwrap_err().to_string();
    assert!(
        e.contains("troupe.redb") && e.contains("already open"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// 200 submissions queued at once, with or without group commit: the
/// store's stats after all are answered.
fn queue_200(options: StoreOptions) -> (StoreStats, Vec<SyncReport>) {
    let d = dir();
    let s = RedbStore::open_dir_with(&d, options).unwrap();
    let waits: Vec<Completion> = (0..200u64)
        .map(|i| {
            s.submit(
                &format!("w{}", i % 8),
                vec![contract::put("k", &i.to_le_bytes())],
            )
        })
        .collect();
    let reports: Vec<SyncReport> = futures::executor::block_on(async {
        let mut v = Vec::new();
        for w in waits {
            v.push(w.wait().await.unwrap());
        }
        v
    });
    let st = s.stats();
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
    (st, reports)
}

#[test]
fn submissions_waiting_during_a_commit_share_the_next_one() {
    let (st, reports) = queue_200(StoreOptions::default());
    assert_eq!(st.submissions, 200);
    assert!(
        st.syncs < 200 && st.max_group > 1,
        "200 submissions queued at once must be grouped: {st:?}"
    );
    assert!(
        reports.windows(2).all(|w| w[0].sync <= w[1].sync),
        "answered in order"
    );
}

#[test]
fn without_group_commit_every_submission_is_a_sync_of_its_own() {
    let (st, reports) = queue_200(StoreOptions {
        group_commit: false,
        ..StoreOptions::default()
    });
    assert_eq!(st.submissions, 200);
    assert_eq!(st.syncs, 200, "{st:?}");
    assert_eq!(st.max_group, 1, "{st:?}");
    assert!(
        reports.iter().all(|r| r.group == 1),
        "every report's group is 1"
    );
}

fn wait(c: Completion) -> Result<SyncReport, DurableError> {
    futures::executor::block_on(c.wait())
}

fn journal_entries(s: &RedbStore) -> Vec<u64> {
    let txn = s.journal.begin_read().unwrap();
    let j = txn.open_table(JOURNAL).unwrap();
    j.iter().unwrap().map(|x| x.unwrap().0.value()).collect()
}

#[test]
fn the_contract_holds_whether_the_journal_folds_after_every_group_or_never() {
    for fold_bytes in [1, usize::MAX] {
        let d = dir();
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join(RedbStore::FILE_NAME);
        {
            let s = RedbStore::open_with_fold_bytes(&path, fold_bytes).unwrap();
            futures::executor::block_on(contract::exercise(&s));
            if fold_bytes == 1 {
                s.wait_folded();
            }
            let folds = s.stats().folds;
            if fold_bytes == 1 {
                assert!(folds >= 1, "folds on every group that arrives");
            } else {
                assert_eq!(folds, 0);
            }
            // Appends after the folds (or on the journal alone) follow the
            // log as it is now: (2, 4).
            let e = wait(s.submit("a", vec![contract::append("log", 4, 1)])).unwrap_err();
            assert!(
                matches!(e, DurableError::NotContiguous { last: 4, .. }),
                "{e}"
            );
            wait(s.submit("a", vec![contract::append("log", 5, 2)])).unwrap();
            assert_eq!(s.load("a").unwrap().log_bounds("log"), Some((2, 6)));
            if fold_bytes == 1 {
                s.wait_folded();
            }
            let left = journal_entries(&s);
            if fold_bytes == 1 {
                // The commit after a fold deletes what it folded.
                wait(s.submit("c", vec![contract::put("k", b"x")])).unwrap();
                let now = journal_entries(&s);
                assert!(
                    now.len() <= 2 && now.iter().all(|e| *e > 5),
                    "{left:?} {now:?}"
                );
            } else {
                assert_eq!(left, vec![1, 2, 3, 4, 5]);
            }
            futures::executor::block_on(contract::exercise_log_pages(&s));
        }
        // Reopening folds whatever the journal still holds.
        let s = RedbStore::open_with_fold_bytes(&path, fold_bytes).unwrap();
        assert!(journal_entries(&s).is_empty());
        let a = s.load("a").unwrap();
        assert_eq!(a.log_bounds("log"), Some((2, 6)));
        assert_eq!(a.get("term"), None);
        assert_eq!(s.load("b").unwrap().get("term"), Some(&b"9"[..]));
        wait(s.submit("a", vec![contract::append("log", 7, 1)])).unwrap();
        assert_eq!(s.load("a").unwrap().log_bounds("log"), Some((2, 7)));
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// `load_log` over a log whose head the tables hold and whose journal cuts
/// it: a truncation in the journal past the first page of the tables, and
/// appends past the tables' end, read as `load` reads them.
#[test]
fn a_page_of_a_log_sees_the_journal_over_the_tables() {
    let d = dir();
    let path = d.join(RedbStore::FILE_NAME);
    std::fs::create_dir_all(&d).unwrap();
    {
        let s = RedbStore::open_with_fold_bytes(&path, 1).unwrap();
        wait(s.submit("p", vec![contract::append("log", 1, 20)])).unwrap();
        s.wait_folded();
    }
    let s = RedbStore::open_with_fold_bytes(&path, usize::MAX).unwrap();
    let page = |after, max| -> Vec<u64> {
        s.load_log("p", "log", after, max)
            .unwrap()
            .into_iter()
            .map(|(i, r)| {
                assert_eq!(u64::from_le_bytes(r.try_into().unwrap()), i);
                i
            })
            .collect()
    };
    assert_eq!(page(0, 3), [1, 2, 3]);
    wait(s.submit("p", vec![contract::append("log", 21, 2)])).unwrap();
    assert_eq!(page(19, 10), [20, 21, 22]);
    wait(s.submit(
        "p",
        vec![Write::TruncateBefore {
            log: "log".into(),
            index: 12,
        }],
    ))
    .unwrap();
    assert_eq!(page(0, 3), [12, 13, 14], "the cut head is not a page");
    wait(s.submit(
        "p",
        vec![
            Write::TruncateFrom {
                log: "log".into(),
                index: 14,
            },
            contract::append("log", 14, 1),
        ],
    ))
    .unwrap();
    assert_eq!(page(0, 10), [12, 13, 14]);
    assert_eq!(journal_entries(&s).len(), 3);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

/// A fold of many groups writes only each key's last write (the groups
/// folded together at the next open): a key put and deleted within the
/// fold is absent, a key deleted and put again holds the last value, a key
/// folded before and deleted now is gone, and the logs' writes keep their
/// order beside the values.
#[test]
fn a_fold_of_many_groups_keeps_each_keys_last_write() {
    let d = dir();
    let path = d.join(RedbStore::FILE_NAME);
    std::fs::create_dir_all(&d).unwrap();
    let del = |k: &str| Write::Delete { key: k.into() };
    {
        let s = RedbStore::open_with_fold_bytes(&path, 1).unwrap();
        wait(s.submit(
            "p",
            vec![contract::put("old", b"1"), contract::put("kept", b"1")],
        ))
        .unwrap();
        s.wait_folded();
    }
    {
        let s = RedbStore::open_with_fold_bytes(&path, usize::MAX).unwrap();
        let groups = [
            vec![
                contract::put("short", b"1"),
                contract::put("kept", b"2"),
                contract::append("log", 1, 5),
            ],
            vec![
                del("short"),
                del("old"),
                contract::put("back", b"1"),
                Write::TruncateFrom {
                    log: "log".into(),
                    index: 4,
                },
            ],
            vec![
                del("back"),
                contract::put("kept", b"3"),
                contract::append("log", 4, 2),
                contract::put("back", b"2"),
            ],
        ];
        for g in groups {
            wait(s.submit("p", g)).unwrap();
        }
        assert_eq!(journal_entries(&s).len(), 3, "nothing folded yet");
    }
    // Opening folds the three groups in one transaction.
    let s = RedbStore::open_with_fold_bytes(&path, usize::MAX).unwrap();
    assert!(journal_entries(&s).is_empty());
    let p = s.load("p").unwrap();
    let keys: Vec<&str> = p.keys().collect();
    assert_eq!(keys, ["back", "kept"]);
    assert_eq!(p.get("kept"), Some(&b"3"[..]));
    assert_eq!(p.get("back"), Some(&b"2"[..]));
    let recs: Vec<u64> = p
        .log("log")
        .map(|(_, r)| u64::from_le_bytes(r.try_into().unwrap()))
        .collect();
    assert_eq!(recs, vec![1, 2, 3, 4, 5]);
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_load_sees_the_tables_and_the_journal_in_order() {
    let d = dir();
    let path = d.join(RedbStore::FILE_NAME);
    std::fs::create_dir_all(&d).unwrap();
    {
        // The tables get 1..=10 and k = 1.
        let s = RedbStore::open_with_fold_bytes(&path, 1).unwrap();
        wait(s.submit(
            "p",
            vec![contract::append("log", 1, 10), contract::put("k", b"1")],
        ))
        .unwrap();
        s.wait_folded();
        assert_eq!(s.stats().folds, 1);
    }
    // Never folds: the rest stays in the journal, and the writer learns
    // the log's bounds from the tables.
    let s = RedbStore::open_with_fold_bytes(&path, usize::MAX).unwrap();
    wait(s.submit(
        "p",
        vec![
            Write::TruncateFrom {
                log: "log".into(),
                index: 8,
            },
            contract::append("log", 8, 5),
            Write::TruncateBefore {
                log: "log".into(),
                index: 3,
            },
            contract::put("k", b"2"),
        ],
    ))
    .unwrap();
    wait(s.submit("q", vec![contract::put("k", b"other")])).unwrap();
    let e = wait(s.submit("p", vec![contract::append("log", 14, 1)])).unwrap_err();
    assert!(
        matches!(e, DurableError::NotContiguous { last: 12, .. }),
        "{e}"
    );
    assert_eq!(journal_entries(&s).len(), 2);
    let p = s.load("p").unwrap();
    assert_eq!(p.log_bounds("log"), Some((3, 12)));
    assert_eq!(p.get("k"), Some(&b"2"[..]));
    let recs: Vec<u64> = p
        .log("log")
        .map(|(_, r)| u64::from_le_bytes(r.try_into().unwrap()))
        .collect();
    assert_eq!(recs, vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(s.load("q").unwrap().get("k"), Some(&b"other"[..]));
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_writer_forgets_folded_logs_and_asks_the_tables_again() {
    let d = dir();
    let s = RedbStore::open_with_fold_bytes(
        {
            std::fs::create_dir_all(&d).unwrap();
            d.join(RedbStore::FILE_NAME)
        },
        1,
    )
    .unwrap();
    let n = BOUNDS_KEPT as u64 + 100;
    let waits: Vec<Completion> = (0..n)
        .map(|i| s.submit(&format!("p{i}"), vec![contract::append("log", 1, 1)]))
        .collect();
    for w in waits {
        wait(w).unwrap();
    }
    s.wait_folded();
    // This commit forgets every folded log.
    wait(s.submit("other", vec![contract::put("k", b"v")])).unwrap();
    for i in [0, n / 2, n - 1] {
        let ns = format!("p{i}");
        let e = wait(s.submit(&ns, vec![contract::append("log", 3, 1)])).unwrap_err();
        assert!(
            matches!(e, DurableError::NotContiguous { last: 1, .. }),
            "{e}"
        );
        wait(s.submit(&ns, vec![contract::append("log", 2, 1)])).unwrap();
        assert_eq!(s.load(&ns).unwrap().log_bounds("log"), Some((1, 2)));
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_journal_entry_that_does_not_decode_stops_the_open_and_says_which() {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join(RedbStore::FILE_NAME);
    {
        let s = RedbStore::open_with_fold_bytes(&path, usize::MAX).unwrap();
        wait(s.submit("p", vec![contract::put("k", b"1")])).unwrap();
    }
    {
        let db = Database::create(RedbStore::journal_path(&path)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(JOURNAL)
            .unwrap()
            .insert(7, &[GROUP_FORMAT, 9, 0, 0, 0][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let e = RedbStore::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("journal entry 7") && e.contains("troupe.redb"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn groups_encode_and_decode_every_write_and_refuse_garbage() {
    let writes = vec![
        contract::put("k", b"v"),
        Write::Delete { key: "gone".into() },
        Write::Append {
            log: "l".into(),
            first: u64::MAX - 3,
            records: vec![vec![], vec![0xff; 300]],
        },
        Write::Append {
            log: "empty".into(),
            first: 9,
            records: vec![],
        },
        Write::TruncateFrom {
            log: "l".into(),
            index: 4,
        },
        Write::TruncateBefore {
            log: "l".into(),
            index: 2,
        },
    ];
    let mut g = GroupEncoder::new();
    g.push("ns-1", &writes);
    g.push("", &[]);
    g.push("ns-ü", &writes[..1]);
    let bytes = g.finish();
    let back = decode_group(&bytes).unwrap();
    assert_eq!(
        back,
        vec![
            ("ns-1".to_string(), writes.clone()),
            (String::new(), vec![]),
            ("ns-ü".to_string(), writes[..1].to_vec()),
        ]
    );
    for cut in 0..bytes.len() {
        assert!(decode_group(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(decode_group(&extra).is_err());
    let mut huge = bytes;
    huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_group(&huge).unwrap_err().contains("exceeds"));
}
