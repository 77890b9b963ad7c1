//! Unit tests of the job queue store.

use super::*;

fn job(provider: &str, sku: &str, size: Option<&str>, priority: JobPriority) -> NewJob {
    NewJob {
        provider: provider.to_string(),
        sku: sku.to_string(),
        size: size.map(str::to_string),
        priority,
        source: "test".to_string(),
    }
}

/// Enqueues `new` at `now`; the test fails if it is refused.
fn put(ledger: &SqliteLedger, new: NewJob, now: i64) -> EnqueueOutcome {
    enqueue_at(ledger, &new, now).expect("enqueue")
}

fn claimer<'a>(provider: &'a str) -> Claimer<'a> {
    Claimer {
        provider,
        account: "acct",
        stream: "products",
        owner: "test",
        fence: crate::store::WriteFence::Unfenced,
    }
}

#[test]
fn enqueue_merges_live_keys_and_keeps_the_higher_priority() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let first = put(
        &ledger,
        job("stockx", "DD1391-100", Some("10"), JobPriority::Background),
        100,
    );
    let EnqueueOutcome::Created { id } = first else {
        panic!("{first:?}")
    };
    let merged = put(
        &ledger,
        job("stockx", "DD1391-100", Some("10"), JobPriority::Hot),
        101,
    );
    assert_eq!(
        merged,
        EnqueueOutcome::Merged {
            id,
            priority: JobPriority::Hot
        }
    );
    let lower = put(
        &ledger,
        job("stockx", "DD1391-100", Some("10"), JobPriority::Background),
        102,
    );
    assert_eq!(
        lower,
        EnqueueOutcome::Merged {
            id,
            priority: JobPriority::Hot
        }
    );
    // Another size is another key.
    assert!(matches!(
        put(
            &ledger,
            job("stockx", "DD1391-100", Some("11"), JobPriority::Background),
            103
        ),
        EnqueueOutcome::Created { .. }
    ));
    // ASINs are case-insensitive keys.
    let asin = put(
        &ledger,
        job("keepa", "b00abc", None, JobPriority::Background),
        104,
    );
    let same = put(
        &ledger,
        job("keepa", "B00ABC", None, JobPriority::Manual),
        105,
    );
    assert_eq!(
        same,
        EnqueueOutcome::Merged {
            id: asin.id(),
            priority: JobPriority::Manual
        }
    );
    let depth = queue_depth(&ledger).unwrap();
    assert_eq!(
        depth,
        vec![
            ("keepa".to_string(), "pending".to_string(), 1),
            ("stockx".to_string(), "pending".to_string(), 2)
        ]
    );
}

#[test]
fn bad_input_is_refused_with_the_fix() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let cases = [
        (
            job("ebya", "X", None, JobPriority::Hot),
            "unknown job provider \"ebya\"",
        ),
        (
            job("keepa", "B00", Some("10"), JobPriority::Hot),
            "keepa jobs are keyed by ASIN alone",
        ),
        (
            job("stockx", "DD1391-100", None, JobPriority::Hot),
            "stockx market data is per size",
        ),
        (
            job("stockx", "a|b", Some("10"), JobPriority::Hot),
            "invalid sku \"a|b\"",
        ),
    ];
    for (new, expected) in cases {
        let err = enqueue(&ledger, &new).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
    }
    assert_eq!(
        "urgent".parse::<JobPriority>().unwrap_err(),
        "unknown priority \"urgent\"; expected manual, hot or background"
    );
    assert_eq!("hot".parse::<JobPriority>(), Ok(JobPriority::Hot));
}

#[test]
fn claim_takes_priority_then_age_and_never_mixes_priorities() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    for (index, asin) in ["B1", "B2", "B3"].iter().enumerate() {
        put(
            &ledger,
            job("keepa", asin, None, JobPriority::Background),
            10 + index as i64,
        );
    }
    put(&ledger, job("keepa", "H1", None, JobPriority::Hot), 20);
    put(&ledger, job("keepa", "H2", None, JobPriority::Hot), 21);
    let first = claim(&ledger, &claimer("keepa"), 10, 600, 30).unwrap();
    let skus: Vec<&str> = first.iter().map(|job| job.sku.as_str()).collect();
    assert_eq!(skus, ["H1", "H2"]);
    let second = claim(&ledger, &claimer("keepa"), 2, 600, 30).unwrap();
    let skus: Vec<&str> = second.iter().map(|job| job.sku.as_str()).collect();
    assert_eq!(skus, ["B1", "B2"]);
    assert!(second.iter().all(|job| job.state == JobState::Running));
    // StockX jobs are another provider's.
    assert!(claim(&ledger, &claimer("stockx"), 10, 600, 30)
        .unwrap()
        .is_empty());
}

#[test]
fn expired_leases_are_rescued_without_consuming_an_attempt() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let id = put(&ledger, job("keepa", "B1", None, JobPriority::Hot), 10).id();
    let claimed = claim(&ledger, &claimer("keepa"), 1, 600, 20).unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(rescue_expired(&ledger, "keepa", 619).unwrap().is_empty());
    let rescued = rescue_expired(&ledger, "keepa", 620).unwrap();
    assert_eq!(rescued, vec![(id, "acct/test".to_string())]);
    let job = get_job(&ledger, id).unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    // The old worker's late result is not written over the rescued job.
    let late = finish(
        &ledger,
        &claimer("keepa"),
        &[(claimed[0].clone(), JobEnd::NotFound("late".to_string()))],
        621,
    )
    .unwrap();
    assert_eq!(late, Finished::default());
}

#[test]
fn failures_retry_until_max_attempts_then_reset_failed_requeues() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let id = put(&ledger, job("stockx", "S", Some("9"), JobPriority::Hot), 10).id();
    for round in 0..2 {
        let now = 100 + round * 100;
        let claimed = claim(&ledger, &claimer("stockx"), 1, 600, now).unwrap();
        let end = JobEnd::Failed {
            error: "http 500".to_string(),
            retry_at: now + 50,
            max_attempts: 2,
        };
        finish(
            &ledger,
            &claimer("stockx"),
            &[(claimed[0].clone(), end)],
            now,
        )
        .unwrap();
    }
    let failed = get_job(&ledger, id).unwrap().unwrap();
    assert_eq!((failed.state, failed.attempts), (JobState::Failed, 2));
    assert_eq!(
        list_jobs(&ledger, Some(JobState::Failed), 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(reset_failed(&ledger, Some("stockx")).unwrap(), 1);
    let again = get_job(&ledger, id).unwrap().unwrap();
    assert_eq!((again.state, again.attempts), (JobState::Pending, 0));
    // A finished key is queued again as a new job.
    let claimed = claim(
        &ledger,
        &claimer("stockx"),
        1,
        600,
        crate::domain::now_ts() + 1,
    )
    .unwrap();
    finish(
        &ledger,
        &claimer("stockx"),
        &[(claimed[0].clone(), JobEnd::NotFound("gone".into()))],
        500,
    )
    .unwrap();
    let new = enqueue(&ledger, &job("stockx", "S", Some("9"), JobPriority::Hot)).unwrap();
    assert!(matches!(new, EnqueueOutcome::Created { id: new_id } if new_id != id));
}

#[test]
fn a_stale_fence_writes_nothing() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    put(&ledger, job("keepa", "B1", None, JobPriority::Hot), 10);
    let newer = Claimer {
        fence: crate::store::WriteFence::Lease(5),
        ..claimer("keepa")
    };
    assert!(claim(&ledger, &newer, 1, 600, 20).unwrap().len() == 1);
    let older = Claimer {
        fence: crate::store::WriteFence::Lease(4),
        ..claimer("keepa")
    };
    let err = claim(&ledger, &older, 1, 600, 20).unwrap_err();
    assert!(
        matches!(err, JobError::Ledger(LedgerError::StaleFence { .. })),
        "{err}"
    );
}
