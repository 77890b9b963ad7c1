//! The job queue's contract: every behaviour of [`JobStore`] and [`tracked::TrackedStore`] the
//! drainers, the scheduler and the surfaces rely on, run against both engines (SQLite in
//! memory, a fresh PostgreSQL database; see `contract_tests`). Each case asserts exact
//! values, so an engine whose answers diverge fails it; `both_engines_answer_alike` also
//! runs one script on both and compares every read. PostgreSQL-only cases: claims by
//! two daemons at once (`SKIP LOCKED`), enqueues of one key at once (one live job), and
//! `store copy` of the queue's tables.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use crate::store::contract_tests::Engine;
use crate::store::jobs::*;
use crate::store::postgres::testing::TestDb;
use crate::store::postgres::{PgLedger, PgSettings};
use crate::store::tracked::{self, PassRecord};
use crate::store::{LedgerError, LedgerStore, SqliteLedger, WriteFence};

fn job(provider: &str, sku: &str, size: Option<&str>, priority: JobPriority) -> NewJob {
    NewJob {
        provider: provider.to_string(),
        sku: sku.to_string(),
        size: size.map(str::to_string),
        priority,
        source: "test".to_string(),
    }
}

fn claimer(provider: &str) -> Claimer<'_> {
    Claimer {
        provider,
        account: "acct",
        stream: "products",
        owner: "test",
        fence: WriteFence::Unfenced,
    }
}

fn put(store: &dyn LedgerStore, new: NewJob, now: i64) -> EnqueueOutcome {
    enqueue_at(store, &new, now).expect("enqueue")
}

fn market(ask: f64) -> JobEnd {
    JobEnd::Succeeded(JobResult::Market {
        lowest_ask: Some(ask),
        highest_bid: None,
        last_sale: Some(0.1 + 0.2),
        currency: "USD".to_string(),
    })
}

fn skus(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().map(|job| job.sku.as_str()).collect()
}

both_engines!(
    enqueue_dedupes_by_key_and_raises_priority,
    claims_take_the_head_priority_oldest_first,
    finishing_writes_results_retries_with_backoff_and_gives_up,
    expired_claims_are_rescued_without_an_attempt,
    a_stale_fence_is_refused_and_nothing_is_written,
    market_prices_and_keepa_products_are_stored_and_read,
    catalog_caches_expire_and_remember_misses,
    tracked_keys_key_states_selection_and_passes,
    failed_jobs_are_reset_and_queue_views_count,
);

fn enqueue_dedupes_by_key_and_raises_priority(engine: &Engine) {
    let store = engine.ledger.as_ref();
    let first = put(
        store,
        job("stockx", "DD1391-100", Some("10"), JobPriority::Background),
        100,
    );
    let EnqueueOutcome::Created { id } = first else {
        panic!("{first:?}")
    };
    for (priority, now) in [(JobPriority::Hot, 101), (JobPriority::Background, 102)] {
        assert_eq!(
            put(
                store,
                job("stockx", "DD1391-100", Some("10"), priority),
                now
            ),
            EnqueueOutcome::Merged {
                id,
                priority: JobPriority::Hot
            },
            "merged, keeping the higher priority"
        );
    }
    let stored = get_job(store, id).unwrap().unwrap();
    assert_eq!(
        (stored.priority, stored.updated_at, stored.created_at),
        (150, 102, 100)
    );
    assert!(matches!(
        put(
            store,
            job("stockx", "DD1391-100", Some("11"), JobPriority::Background),
            103
        ),
        EnqueueOutcome::Created { .. }
    ));
    let asin = put(
        store,
        job("keepa", "b00abc", None, JobPriority::Background),
        104,
    );
    assert_eq!(
        put(
            store,
            job("keepa", "B00ABC", None, JobPriority::Manual),
            105
        ),
        EnqueueOutcome::Merged {
            id: asin.id(),
            priority: JobPriority::Manual
        }
    );
    assert!(matches!(
        enqueue_at(store, &job("stockx", "X", None, JobPriority::Hot), 1),
        Err(JobError::Invalid(_))
    ));
    // A key whose job ended gets a new job; the ended one stays as history.
    let claimed = claim(store, &claimer("keepa"), 5, 600, 200).unwrap();
    finish(
        store,
        &claimer("keepa"),
        &[(claimed[0].clone(), JobEnd::NotFound("gone".into()))],
        201,
    )
    .unwrap();
    let again = put(store, job("keepa", "B00ABC", None, JobPriority::Hot), 202);
    assert!(matches!(again, EnqueueOutcome::Created { id } if id > asin.id()));
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM jobs WHERE dedupe_key = 'keepa|B00ABC'"),
        2
    );
}

fn claims_take_the_head_priority_oldest_first(engine: &Engine) {
    let store = engine.ledger.as_ref();
    for (index, asin) in ["B1", "B2", "B3"].iter().enumerate() {
        put(
            store,
            job("keepa", asin, None, JobPriority::Background),
            10 + index as i64,
        );
    }
    put(store, job("keepa", "H1", None, JobPriority::Hot), 20);
    put(store, job("keepa", "H2", None, JobPriority::Hot), 21);
    put(store, job("keepa", "M1", None, JobPriority::Manual), 22);
    // Not due yet: a retry waiting for its time.
    engine.sql("UPDATE jobs SET not_before = 1000 WHERE sku = 'M1'");
    assert!(!pending_above(store, "keepa", JobPriority::Hot, 30).unwrap());
    assert!(pending_above(store, "keepa", JobPriority::Hot, 1000).unwrap());
    let first = claim(store, &claimer("keepa"), 10, 600, 30).unwrap();
    assert_eq!(skus(&first), ["H1", "H2"], "the head's priority only");
    assert!(first.iter().all(|job| job.state == JobState::Running
        && job.lease_owner.as_deref() == Some("acct/test")
        && job.lease_until == Some(630)
        && job.updated_at == 30));
    let second = claim(store, &claimer("keepa"), 2, 600, 31).unwrap();
    assert_eq!(
        skus(&second),
        ["B1", "B2"],
        "oldest first, at most the batch"
    );
    assert!(claim(store, &claimer("stockx"), 10, 600, 31)
        .unwrap()
        .is_empty());
    assert_eq!(
        skus(&claim(store, &claimer("keepa"), 10, 600, 1000).unwrap()),
        ["M1"]
    );
    assert_eq!(
        skus(&claim(store, &claimer("keepa"), 10, 600, 1000).unwrap()),
        ["B3"]
    );
    assert!(claim(store, &claimer("keepa"), 10, 600, 1000)
        .unwrap()
        .is_empty());
}

fn finishing_writes_results_retries_with_backoff_and_gives_up(engine: &Engine) {
    let store = engine.ledger.as_ref();
    for sku in ["OK", "GONE", "FLAKY", "LATER"] {
        put(store, job("stockx", sku, Some("10"), JobPriority::Hot), 10);
    }
    let claimed = claim(store, &claimer("stockx"), 10, 600, 20).unwrap();
    assert_eq!(claimed.len(), 4);
    let by_sku = |sku: &str| claimed.iter().find(|job| job.sku == sku).cloned().unwrap();
    let failed = |retry_at| JobEnd::Failed {
        error: "http 500".to_string(),
        retry_at,
        max_attempts: 2,
    };
    let counts = finish(
        store,
        &claimer("stockx"),
        &[
            (by_sku("OK"), market(101.5)),
            (by_sku("GONE"), JobEnd::NotFound("no such product".into())),
            (by_sku("FLAKY"), failed(80)),
            (
                by_sku("LATER"),
                JobEnd::Deferred {
                    reason: "429".into(),
                    not_before: 90,
                },
            ),
        ],
        30,
    )
    .unwrap();
    assert_eq!(
        counts,
        Finished {
            succeeded: 1,
            failed: 1,
            exhausted: 0,
            not_found: 1,
            deferred: 1
        }
    );
    let state = |sku: &str| get_job(store, by_sku(sku).id).unwrap().unwrap();
    let ok = state("OK");
    assert_eq!(
        (ok.state, ok.finished_at, ok.lease_owner),
        (JobState::Succeeded, Some(30), None)
    );
    let gone = state("GONE");
    assert_eq!(
        (gone.state, gone.error.as_deref()),
        (JobState::NotFound, Some("no such product"))
    );
    let flaky = state("FLAKY");
    assert_eq!(
        (
            flaky.state,
            flaky.attempts,
            flaky.not_before,
            flaky.lease_until
        ),
        (JobState::Pending, 1, 80, None),
        "back to pending at its retry time"
    );
    let later = state("LATER");
    assert_eq!(
        (later.state, later.attempts, later.not_before),
        (JobState::Pending, 0, 90)
    );
    let prices = market_prices(store, 10).unwrap();
    assert_eq!(prices.len(), 1);
    assert_eq!(prices[0].lowest_ask, Some(101.5));
    assert_eq!(
        prices[0].last_sale,
        Some(0.1 + 0.2),
        "reals round-trip exactly"
    );
    // The backoff holds: not claimable before 80.
    assert_eq!(
        skus(&claim(store, &claimer("stockx"), 10, 600, 79).unwrap()),
        Vec::<&str>::new()
    );
    let retry = claim(store, &claimer("stockx"), 1, 600, 80).unwrap();
    assert_eq!(skus(&retry), ["FLAKY"]);
    let counts = finish(
        store,
        &claimer("stockx"),
        &[(retry[0].clone(), failed(200))],
        81,
    )
    .unwrap();
    assert_eq!((counts.failed, counts.exhausted), (1, 1));
    let given_up = state("FLAKY");
    assert_eq!(
        (given_up.state, given_up.attempts, given_up.finished_at),
        (JobState::Failed, 2, Some(81))
    );
    // Another owner's job is left alone.
    let other = Claimer {
        owner: "someone-else",
        ..claimer("stockx")
    };
    let later = claim(store, &claimer("stockx"), 1, 600, 90).unwrap();
    assert_eq!(
        finish(store, &other, &[(later[0].clone(), market(1.0))], 91).unwrap(),
        Finished::default()
    );
    assert_eq!(state("LATER").state, JobState::Running);
}

fn expired_claims_are_rescued_without_an_attempt(engine: &Engine) {
    let store = engine.ledger.as_ref();
    let id = put(store, job("keepa", "B1", None, JobPriority::Hot), 10).id();
    let id2 = put(store, job("keepa", "B2", None, JobPriority::Hot), 11).id();
    let claimed = claim(store, &claimer("keepa"), 1, 600, 20).unwrap();
    claim(store, &claimer("keepa"), 1, 900, 20).unwrap();
    assert!(rescue_expired(store, "keepa", 619).unwrap().is_empty());
    assert!(rescue_expired(store, "stockx", 10_000).unwrap().is_empty());
    assert_eq!(
        rescue_expired(store, "keepa", 620).unwrap(),
        vec![(id, "acct/test".to_string())]
    );
    let job = get_job(store, id).unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts, job.not_before, job.lease_owner),
        (JobState::Pending, 0, 620, None)
    );
    assert_eq!(
        job.error.as_deref(),
        Some("rescued: the lease of its worker expired")
    );
    assert_eq!(
        get_job(store, id2).unwrap().unwrap().state,
        JobState::Running
    );
    // The dead worker's late result is not written over the rescued job.
    let late = finish(
        store,
        &claimer("keepa"),
        &[(claimed[0].clone(), JobEnd::NotFound("late".to_string()))],
        621,
    )
    .unwrap();
    assert_eq!(late, Finished::default());
    assert_eq!(
        get_job(store, id).unwrap().unwrap().state,
        JobState::Pending
    );
}

fn a_stale_fence_is_refused_and_nothing_is_written(engine: &Engine) {
    let store = engine.ledger.as_ref();
    put(store, job("stockx", "A", Some("9"), JobPriority::Hot), 10);
    put(store, job("stockx", "B", Some("9"), JobPriority::Hot), 11);
    let old = Claimer {
        fence: WriteFence::Lease(4),
        ..claimer("stockx")
    };
    let taken = claim(store, &old, 1, 600, 20).unwrap();
    assert_eq!(skus(&taken), ["A"]);
    // The lease moves on: the new owner's first write records fence 5.
    let new = Claimer {
        fence: WriteFence::Lease(5),
        owner: "new-owner",
        ..claimer("stockx")
    };
    assert_eq!(skus(&claim(store, &new, 1, 600, 21).unwrap()), ["B"]);
    assert_eq!(store.newest_fence("acct", "products").unwrap(), 5);
    let stale = |err: JobError| {
        matches!(
            err,
            JobError::Ledger(LedgerError::StaleFence {
                fence: 4,
                newest: 5,
                ..
            })
        )
    };
    let err = finish(store, &old, &[(taken[0].clone(), market(9.0))], 22).unwrap_err();
    assert!(stale(err), "the old owner's result is refused");
    put(store, job("stockx", "C", Some("9"), JobPriority::Hot), 23);
    let err = claim(store, &old, 5, 600, 24).unwrap_err();
    assert!(stale(err), "the old owner's claim is refused");
    // Nothing was written by either refusal.
    assert!(market_prices(store, 10).unwrap().is_empty());
    let a = get_job(store, taken[0].id).unwrap().unwrap();
    assert_eq!((a.state, a.updated_at), (JobState::Running, 20));
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND sku = 'C'"),
        1
    );
    // A write carrying no fence at all is refused too.
    let missing = Claimer {
        fence: WriteFence::Missing,
        ..claimer("stockx")
    };
    assert!(matches!(
        claim(store, &missing, 1, 600, 25),
        Err(JobError::Ledger(LedgerError::Unfenced { .. }))
    ));
}

fn market_prices_and_keepa_products_are_stored_and_read(engine: &Engine) {
    let store = engine.ledger.as_ref();
    put(store, job("stockx", "S1", Some("10"), JobPriority::Hot), 10);
    put(store, job("ebay", "gtin 123", None, JobPriority::Hot), 10);
    put(store, job("keepa", "B0KEEPA", None, JobPriority::Hot), 10);
    let stockx = claim(store, &claimer("stockx"), 5, 600, 20).unwrap();
    let ebay = claim(store, &claimer("ebay"), 5, 600, 20).unwrap();
    let keepa = claim(store, &claimer("keepa"), 5, 600, 20).unwrap();
    let stats = ListingStats {
        count: 3,
        min: 10.25,
        median: 12.5,
        mean: 12.0 + 1.0 / 3.0,
        max: 13.25,
        currency: "EUR".into(),
        total: 140,
    };
    let snapshot = KeepaSnapshot {
        domain: 1,
        title: Some("Thing \u{2014} \"quoted\"".into()),
        current_amazon: Some(-1),
        current_new: Some(2599),
        sales_rank: None,
        avg_90_new: Some(2499),
        avg_365_new: Some(2399),
        history_points: 42,
        raw: "{\"asin\":\"B0KEEPA\"}".into(),
    };
    finish(
        store,
        &claimer("stockx"),
        &[(
            stockx[0].clone(),
            JobEnd::Succeeded(JobResult::Market {
                lowest_ask: Some(120.0),
                highest_bid: Some(99.99),
                last_sale: None,
                currency: "USD".into(),
            }),
        )],
        30,
    )
    .unwrap();
    finish(
        store,
        &claimer("ebay"),
        &[(
            ebay[0].clone(),
            JobEnd::Succeeded(JobResult::Listings(stats.clone())),
        )],
        31,
    )
    .unwrap();
    finish(
        store,
        &claimer("keepa"),
        &[(
            keepa[0].clone(),
            JobEnd::Succeeded(JobResult::Keepa(Box::new(snapshot.clone()))),
        )],
        32,
    )
    .unwrap();
    let prices = market_prices(store, 10).unwrap();
    assert_eq!(
        prices,
        vec![
            MarketPrice {
                provider: "ebay".into(),
                sku: "gtin 123".into(),
                size: None,
                lowest_ask: Some(10.25),
                highest_bid: None,
                last_sale: None,
                currency: "EUR".into(),
                updated_at: 31,
                listings: Some(stats),
            },
            MarketPrice {
                provider: "stockx".into(),
                sku: "S1".into(),
                size: Some("10".into()),
                lowest_ask: Some(120.0),
                highest_bid: Some(99.99),
                last_sale: None,
                currency: "USD".into(),
                updated_at: 30,
                listings: None,
            },
        ]
    );
    assert_eq!(market_prices(store, 1).unwrap().len(), 1, "limit");
    assert_eq!(
        keepa_products(store, 10).unwrap(),
        vec![KeepaProduct {
            asin: "B0KEEPA".into(),
            domain: 1,
            title: snapshot.title.clone(),
            current_amazon: Some(-1),
            current_new: Some(2599),
            sales_rank: None,
            avg_90_new: Some(2499),
            avg_365_new: Some(2399),
            history_points: 42,
            raw: snapshot.raw.clone(),
            updated_at: 32,
        }]
    );
    // A newer answer replaces the row.
    put(store, job("stockx", "S1", Some("10"), JobPriority::Hot), 40);
    let again = claim(store, &claimer("stockx"), 5, 600, 41).unwrap();
    finish(
        store,
        &claimer("stockx"),
        &[(again[0].clone(), market(125.0))],
        42,
    )
    .unwrap();
    let prices = market_prices(store, 10).unwrap();
    assert_eq!(
        (
            prices[0].sku.as_str(),
            prices[0].lowest_ask,
            prices[0].highest_bid
        ),
        ("S1", Some(125.0), None)
    );
    // Run records.
    let run = JobRun {
        provider: "stockx".into(),
        account: "acct".into(),
        started_at: 40,
        finished_at: 43,
        jobs_run: 1,
        succeeded: 1,
        calls_made: 2,
        outcome: "finished".into(),
        ..JobRun::default()
    };
    let first = record_run(store, &run).unwrap();
    let second = record_run(
        store,
        &JobRun {
            started_at: 50,
            ..run.clone()
        },
    )
    .unwrap();
    assert!(second > first);
    let runs = recent_runs(store, 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0],
        JobRun {
            id: second,
            started_at: 50,
            ..run.clone()
        }
    );
    assert_eq!(runs[1], JobRun { id: first, ..run });
}

fn catalog_caches_expire_and_remember_misses(engine: &Engine) {
    let store = engine.ledger.as_ref();
    assert_eq!(cached_stockx_style(store, "DD1391-100", 100).unwrap(), None);
    put_stockx_style(store, "DD1391-100", Some("p-1"), Some("Dunk"), 100, 50).unwrap();
    put_stockx_style(store, "NOPE-1", None, None, 100, 10).unwrap();
    assert_eq!(
        cached_stockx_style(store, " dd1391-100 ", 120).unwrap(),
        Some(CachedStyle::Product {
            product_id: "p-1".to_string()
        })
    );
    assert_eq!(
        cached_stockx_style(store, "NOPE-1", 105).unwrap(),
        Some(CachedStyle::Miss { until: 110 })
    );
    assert_eq!(
        cached_stockx_style(store, "NOPE-1", 110).unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        cached_stockx_variant(store, "p-1", "10", 120).unwrap(),
        CachedVariant::Unknown
    );
    let rows = vec![
        VariantRow {
            size_keys: vec!["10".into(), "us m 10".into(), "uk 9".into()],
            variant_id: "v-10".into(),
        },
        VariantRow {
            size_keys: vec!["9".into(), "us m 9".into(), "uk 8".into(), "10".into()],
            variant_id: "v-9".into(),
        },
    ];
    put_stockx_variants(store, "p-1", &rows, 100, 50).unwrap();
    assert_eq!(
        cached_stockx_variant(store, "p-1", "uk 9", 120).unwrap(),
        CachedVariant::Variant {
            variant_id: "v-10".into()
        }
    );
    assert_eq!(
        cached_stockx_variant(store, "p-1", "10", 120).unwrap(),
        CachedVariant::Variant {
            variant_id: "v-10".into()
        },
        "a variant's own value wins over another's size-chart entry"
    );
    assert_eq!(
        cached_stockx_variant(store, "p-1", "99", 120).unwrap(),
        CachedVariant::NoSuchSize {
            sizes: vec!["10".into(), "9".into()]
        }
    );
    assert_eq!(
        cached_stockx_variant(store, "p-1", "10", 150).unwrap(),
        CachedVariant::Unknown,
        "the variant list expired"
    );
    // Replacing the list drops the old variants.
    put_stockx_variants(
        store,
        "p-1",
        &[VariantRow {
            size_keys: vec!["11".into()],
            variant_id: "v-11".into(),
        }],
        200,
        50,
    )
    .unwrap();
    assert_eq!(
        cached_stockx_variant(store, "p-1", "10", 210).unwrap(),
        CachedVariant::NoSuchSize {
            sizes: vec!["11".into()]
        }
    );
    assert_eq!(stockx_cache_counts(store, 105).unwrap(), (1, 1, 1));
    assert_eq!(stockx_cache_counts(store, 140).unwrap(), (1, 0, 1));
    assert_eq!(stockx_cache_counts(store, 300).unwrap(), (0, 0, 0));
    put_stockx_style(store, "DD1391-100", Some("p-1"), None, 200, 50).unwrap();
    forget_stockx_style(store, "DD1391-100").unwrap();
    assert_eq!(cached_stockx_style(store, "DD1391-100", 210).unwrap(), None);
    assert_eq!(
        cached_stockx_variant(store, "p-1", "11", 210).unwrap(),
        CachedVariant::Unknown,
        "the product's variants go with it"
    );
    assert_eq!(engine.sql("SELECT COUNT(*) FROM stockx_variants"), 0);

    // Alias.
    assert_eq!(cached_alias_item(store, "DD1391-100", 100).unwrap(), None);
    put_alias_item(
        store,
        "DD1391-100",
        Some("dunk-low"),
        &[9.0, 10.5, f64::NAN, -1.0],
        100,
        50,
    )
    .unwrap();
    put_alias_item(store, "UNKNOWN-1", None, &[], 100, 10).unwrap();
    assert_eq!(
        cached_alias_item(store, "dd1391 100", 120).unwrap(),
        Some(CachedAliasItem::Item {
            catalog_id: "dunk-low".to_string(),
            sizes: vec![9.0, 10.5]
        })
    );
    assert_eq!(
        cached_alias_item(store, "UNKNOWN-1", 105).unwrap(),
        Some(CachedAliasItem::Miss { until: 110 })
    );
    assert_eq!(alias_cache_counts(store, 105).unwrap(), (1, 1));
    assert_eq!(cached_alias_item(store, "UNKNOWN-1", 110).unwrap(), None);
    put_alias_item(store, "DD1391100", Some("dunk-low-2"), &[], 150, 50).unwrap();
    assert_eq!(
        cached_alias_item(store, "DD1391-100", 160).unwrap(),
        Some(CachedAliasItem::Item {
            catalog_id: "dunk-low-2".to_string(),
            sizes: vec![]
        })
    );
    forget_alias_sku(store, "dd1391-100").unwrap();
    assert_eq!(cached_alias_item(store, "DD1391-100", 160).unwrap(), None);
    assert_eq!(alias_cache_counts(store, 160).unwrap(), (0, 0));
}

fn pass(provider: &str, started_at: i64) -> PassRecord {
    PassRecord {
        id: 0,
        provider: provider.into(),
        started_at,
        finished_at: started_at + 1,
        tracked: 4,
        fresh: 1,
        stale_after: 3600,
        live: 1,
        selected: 2,
        hot: 1,
        background: 1,
        merged: 0,
        deferred: 1,
        budget_left: 2.5,
        outcome: "ok".into(),
    }
}

fn tracked_keys_key_states_selection_and_passes(engine: &Engine) {
    let store = engine.ledger.as_ref();
    assert!(tracked::track(store, "stockx", "A-1", Some("10"), "cli", 100).unwrap());
    assert!(
        !tracked::track(store, "stockx", "A-1", Some("10"), "cli", 101).unwrap(),
        "already"
    );
    let items = [
        job("stockx", "B-2", Some("9"), JobPriority::Background),
        job("stockx", "C-3", Some("9"), JobPriority::Background),
        job("stockx", "A-1", Some("10"), JobPriority::Background),
        job("keepa", "b0k", None, JobPriority::Background),
    ];
    let items: Vec<NewJob> = items.iter().map(|item| validate(item).unwrap()).collect();
    assert_eq!(
        tracked::track_many(store, &items, "import", 102).unwrap(),
        tracked::TrackOutcome {
            added: 3,
            already: 1
        }
    );
    assert_eq!(
        tracked::tracked_providers(store).unwrap(),
        vec![("keepa".to_string(), 1), ("stockx".to_string(), 3)]
    );
    // A-1 succeeded at 150; B-2 failed at 160 after succeeding at 140; C-3 is live.
    let finish_as = |sku: &str, size: &str, end: JobEnd, now: i64| {
        put(store, job("stockx", sku, Some(size), JobPriority::Hot), now);
        let taken = claim(store, &claimer("stockx"), 1, 600, now).unwrap();
        assert_eq!(skus(&taken), [sku]);
        finish(store, &claimer("stockx"), &[(taken[0].clone(), end)], now).unwrap();
    };
    finish_as("B-2", "9", market(1.0), 140);
    finish_as("A-1", "10", market(2.0), 150);
    finish_as(
        "B-2",
        "9",
        JobEnd::Failed {
            error: "500".into(),
            retry_at: 0,
            max_attempts: 1,
        },
        160,
    );
    put(
        store,
        job("stockx", "C-3", Some("9"), JobPriority::Background),
        170,
    );
    let states = tracked::key_states(store, "stockx").unwrap();
    let view: Vec<_> = states
        .iter()
        .map(|key| {
            (
                key.dedupe_key.as_str(),
                key.size.as_deref(),
                key.added_at,
                key.last_success,
                key.last_end,
                key.live,
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (
                "stockx|A-1|10",
                Some("10"),
                100,
                Some(150),
                Some(150),
                false
            ),
            ("stockx|B-2|9", Some("9"), 102, Some(140), Some(160), false),
            ("stockx|C-3|9", Some("9"), 102, None, None, true),
        ]
    );
    let listed = tracked::list_tracked(store, Some("stockx"), 10).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|item| (item.sku.as_str(), item.last_success, item.source.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("A-1", Some(150), "cli"),
            ("B-2", Some(140), "import"),
            ("C-3", None, "import")
        ]
    );
    assert_eq!(tracked::list_tracked(store, None, 10).unwrap().len(), 4);
    let keepa = &tracked::list_tracked(store, Some("keepa"), 10).unwrap()[0];
    assert_eq!((keepa.sku.as_str(), keepa.size.as_deref()), ("B0K", None));
    assert_eq!(tracked::live_jobs(store, "stockx").unwrap(), 1);

    // The scheduler's selection: C-3 merges (raised to hot), the others are created.
    let selected = vec![
        ("C-3".to_string(), Some("9".to_string()), JobPriority::Hot),
        (
            "B-2".to_string(),
            Some("9".to_string()),
            JobPriority::Background,
        ),
        ("NEW-4".to_string(), Some("8".to_string()), JobPriority::Hot),
    ];
    assert_eq!(
        tracked::enqueue_selected(store, "stockx", &selected, "freshness", 180).unwrap(),
        (2, 1)
    );
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM jobs WHERE sku = 'C-3' AND state = 'pending' AND priority = 150 AND updated_at = 180"),
        1
    );
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM jobs WHERE source = 'freshness' AND state = 'pending' AND not_before = 180"),
        2
    );
    assert_eq!(tracked::live_jobs(store, "stockx").unwrap(), 3);
    assert!(tracked::key_states(store, "stockx")
        .unwrap()
        .iter()
        .all(|key| key.live != (key.sku == "A-1")));

    assert!(tracked::untrack(store, "stockx", "C-3", Some("9")).unwrap());
    assert!(!tracked::untrack(store, "stockx", "C-3", Some("9")).unwrap());
    assert_eq!(tracked::key_states(store, "stockx").unwrap().len(), 2);

    // Passes.
    let first = tracked::record_pass(store, &pass("stockx", 1000)).unwrap();
    let keepa_pass = tracked::record_pass(store, &pass("keepa", 1001)).unwrap();
    let newest = tracked::record_pass(
        store,
        &PassRecord {
            budget_left: f64::INFINITY,
            outcome: "no_budget".into(),
            ..pass("stockx", 2000)
        },
    )
    .unwrap();
    assert!(first < keepa_pass && keepa_pass < newest);
    let recent = tracked::recent_passes(store, Some("stockx"), 10).unwrap();
    assert_eq!(
        recent,
        vec![
            PassRecord {
                id: newest,
                budget_left: 0.0,
                outcome: "no_budget".into(),
                ..pass("stockx", 2000)
            },
            PassRecord {
                id: first,
                ..pass("stockx", 1000)
            },
        ]
    );
    assert_eq!(tracked::recent_passes(store, None, 10).unwrap().len(), 3);
    let latest = tracked::latest_passes(store).unwrap();
    assert_eq!(
        latest.iter().map(|pass| pass.id).collect::<Vec<_>>(),
        vec![keepa_pass, newest]
    );
    assert_eq!(tracked::prune_passes(store, 1001).unwrap(), 1);
    assert_eq!(tracked::recent_passes(store, None, 10).unwrap().len(), 2);
}

fn failed_jobs_are_reset_and_queue_views_count(engine: &Engine) {
    let store = engine.ledger.as_ref();
    let id = put(store, job("stockx", "S", Some("9"), JobPriority::Hot), 10).id();
    put(store, job("keepa", "K1", None, JobPriority::Background), 11);
    put(store, job("keepa", "K2", None, JobPriority::Background), 12);
    let taken = claim(store, &claimer("stockx"), 1, 600, 20).unwrap();
    let give_up = JobEnd::Failed {
        error: "http 500".to_string(),
        retry_at: 0,
        max_attempts: 1,
    };
    finish(
        store,
        &claimer("stockx"),
        &[(taken[0].clone(), give_up)],
        21,
    )
    .unwrap();
    claim(store, &claimer("keepa"), 1, 600, 22).unwrap();
    assert_eq!(
        queue_depth(store).unwrap(),
        vec![
            ("keepa".to_string(), "pending".to_string(), 1),
            ("keepa".to_string(), "running".to_string(), 1),
            ("stockx".to_string(), "failed".to_string(), 1),
        ]
    );
    let queue = provider_queue(store, "stockx", 30).unwrap();
    assert_eq!(queue.count("failed"), 1);
    assert_eq!(
        queue.last_failure,
        Some(("stockx|S|9".to_string(), "http 500".to_string()))
    );
    assert_eq!(
        (queue.pending_due_since, queue.last_activity, queue.due_now),
        (None, Some(21), 0)
    );
    let keepa = provider_queue(store, "keepa", 30).unwrap();
    assert_eq!(
        (keepa.pending_due_since, keepa.last_activity, keepa.due_now),
        (Some(12), Some(22), 2)
    );
    assert_eq!(
        provider_queue(store, "keepa", 5).unwrap().due_now,
        1,
        "only the running one"
    );
    assert_eq!(
        list_jobs(store, Some(JobState::Failed), 10).unwrap()[0].id,
        id
    );
    assert_eq!(list_jobs(store, None, 10).unwrap().len(), 3);
    assert_eq!(list_jobs(store, None, 2).unwrap().len(), 2);
    assert_eq!(get_job(store, 9_999).unwrap(), None);
    assert!(matches!(
        reset_failed(store, Some("nope")),
        Err(JobError::Invalid(_))
    ));
    assert_eq!(reset_failed(store, Some("keepa")).unwrap(), 0);
    assert_eq!(reset_failed(store, None).unwrap(), 1);
    let again = get_job(store, id).unwrap().unwrap();
    assert_eq!(
        (again.state, again.attempts, again.finished_at),
        (JobState::Pending, 0, None)
    );
    assert_eq!(
        reset_failed(store, None).unwrap(),
        0,
        "nothing failed any more"
    );
}

/// One script of every write, then every read as text: the same on both engines.
fn script(store: &dyn LedgerStore) -> Vec<String> {
    let mut reads = Vec::new();
    for (index, (provider, sku, size)) in [
        ("stockx", "Zeta", Some("10")),
        ("stockx", "alpha", Some("10")),
        ("stockx", "Beta", Some("9.5")),
        ("alias", "DD1391-100", Some("10.0")),
        ("keepa", "b0a", None),
        ("ebay", "gtin 1", None),
    ]
    .into_iter()
    .enumerate()
    {
        put(
            store,
            job(provider, sku, size, JobPriority::Background),
            10 + index as i64 % 2,
        );
        tracked::track(store, provider, sku, size, "script", 5).unwrap();
    }
    for provider in JOB_PROVIDERS {
        let taken = claim(store, &claimer(provider), 10, 600, 20).unwrap();
        let ends: Vec<_> = taken
            .iter()
            .enumerate()
            .map(|(index, job)| {
                let end = match (provider, index) {
                    (&"ebay", _) => JobEnd::Succeeded(JobResult::Listings(ListingStats {
                        count: 2,
                        min: 1.5,
                        median: 2.25,
                        mean: 2.25,
                        max: 3.0,
                        currency: "USD".into(),
                        total: 2,
                    })),
                    (_, 1) => JobEnd::NotFound("nope".into()),
                    (_, index) => market(index as f64 + 0.5),
                };
                (job.clone(), end)
            })
            .collect();
        reads.push(format!("{provider} claimed {:?}", skus(&taken)));
        reads.push(format!(
            "{:?}",
            finish(store, &claimer(provider), &ends, 30).unwrap()
        ));
        reads.push(format!(
            "{:?}",
            tracked::key_states(store, provider).unwrap()
        ));
        reads.push(format!(
            "{:?}",
            provider_queue(store, provider, 40).unwrap()
        ));
    }
    reads.push(format!("{:?}", list_jobs(store, None, 100).unwrap()));
    reads.push(format!("{:?}", market_prices(store, 100).unwrap()));
    reads.push(format!("{:?}", queue_depth(store).unwrap()));
    reads.push(format!(
        "{:?}",
        tracked::list_tracked(store, None, 100).unwrap()
    ));
    reads.push(format!("{:?}", tracked::tracked_providers(store).unwrap()));
    reads
}

/// The engines answer the same script with the same reads, line by line.
#[test]
fn both_engines_answer_alike() {
    let sqlite = Engine::sqlite();
    let postgres = Engine::postgres();
    let (left, right) = (
        script(sqlite.ledger.as_ref()),
        script(postgres.ledger.as_ref()),
    );
    assert_eq!(left.len(), right.len());
    for (sqlite_read, postgres_read) in left.iter().zip(&right) {
        assert_eq!(sqlite_read, postgres_read, "sqlite and postgresql diverge");
    }
}

/// Two daemons (two pools on one database) claim the same provider's queue at once, in
/// batches, until it is empty: `FOR UPDATE SKIP LOCKED` gives them disjoint jobs, and
/// together every job exactly once.
#[test]
fn concurrent_job_claims_on_postgres_never_overlap() {
    let db = TestDb::create();
    let first = Arc::new(PgLedger::open(&db.url, &PgSettings::default()).expect("open"));
    let second = Arc::new(PgLedger::open(&db.url, &PgSettings::default()).expect("open"));
    let total = 120;
    for index in 0..total {
        put(
            first.as_ref(),
            job("keepa", &format!("B{index:04}"), None, JobPriority::Hot),
            10,
        );
    }
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> =
        (0..4)
            .map(|worker| {
                let store = if worker % 2 == 0 {
                    Arc::clone(&first)
                } else {
                    Arc::clone(&second)
                };
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let owner = format!("daemon-{worker}");
                    let me = Claimer {
                        owner: &owner,
                        fence: WriteFence::Lease(1),
                        ..claimer("keepa")
                    };
                    // Connected before the start, so both pools race from the first claim.
                    pending_above(store.as_ref(), "keepa", JobPriority::Manual, 20).expect("warm");
                    start.wait();
                    let mut mine = Vec::new();
                    loop {
                        let taken = claim(store.as_ref(), &me, 3, 600, 20).expect("claim");
                        if taken.is_empty() {
                            break;
                        }
                        assert!(taken.iter().all(|job| job.lease_owner.as_deref()
                            == Some(format!("acct/{owner}").as_str())));
                        mine.extend(taken.iter().map(|job| job.id));
                    }
                    mine
                })
            })
            .collect();
    let claimed: Vec<Vec<i64>> = workers
        .into_iter()
        .map(|worker| worker.join().expect("worker"))
        .collect();
    let mut seen = BTreeSet::new();
    for ids in &claimed {
        for id in ids {
            assert!(seen.insert(*id), "job {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), total, "every job claimed once");
    assert!(
        claimed.iter().filter(|ids| !ids.is_empty()).count() >= 2,
        "the claimers worked at once: {:?}",
        claimed.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut client = db.client();
    let running: i64 = client
        .query_one("SELECT COUNT(*) FROM jobs WHERE state = 'running'", &[])
        .unwrap()
        .get(0);
    assert_eq!(running, i64::try_from(total).unwrap());
}

/// Daemons queueing the same keys at once (two pools, eight threads) leave one live job
/// per key: the unique index of live keys turns a racing insert into a merge.
#[test]
fn concurrent_enqueues_of_one_key_on_postgres_leave_one_live_job() {
    let db = TestDb::create();
    let pools = [
        Arc::new(PgLedger::open(&db.url, &PgSettings::default()).expect("open")),
        Arc::new(PgLedger::open(&db.url, &PgSettings::default()).expect("open")),
    ];
    let threads = 8;
    let keys = 20;
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let store = Arc::clone(&pools[thread % 2]);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                pending_above(store.as_ref(), "stockx", JobPriority::Manual, 0).expect("warm");
                start.wait();
                (0..keys)
                    .map(|key| {
                        let priority = if thread == 3 {
                            JobPriority::Manual
                        } else {
                            JobPriority::Background
                        };
                        let new = job("stockx", &format!("K-{key}"), Some("10"), priority);
                        enqueue_at(store.as_ref(), &new, 100).expect("enqueue")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<EnqueueOutcome> = workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("worker"))
        .collect();
    let created = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, EnqueueOutcome::Created { .. }))
        .count();
    assert_eq!(created, keys, "one job created per key, the rest merged");
    let mut client = db.client();
    let live: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(live, i64::try_from(keys).unwrap());
    let manual: i64 = client
        .query_one("SELECT COUNT(*) FROM jobs WHERE priority = 200", &[])
        .unwrap()
        .get(0);
    assert_eq!(manual, live, "every key kept the manual request's priority");
}

/// `store copy` moves the queue's tables (reals exactly, NULLs as NULLs), verifies them,
/// and new rows on PostgreSQL get ids above the copied ones.
#[test]
fn store_copy_moves_the_queue_and_ids_continue_above_the_copied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("marketsync.db");
    let sqlite = SqliteLedger::open(&path).unwrap();
    let source_reads = script(&sqlite);
    let run = JobRun {
        provider: "keepa".into(),
        account: "acct".into(),
        outcome: "finished".into(),
        ..JobRun::default()
    };
    for _ in 0..3 {
        record_run(&sqlite, &run).unwrap();
        tracked::record_pass(&sqlite, &pass("stockx", 1000)).unwrap();
    }
    put_stockx_style(&sqlite, "DD1391-100", Some("p-1"), Some("Dunk"), 100, 50).unwrap();
    put_stockx_style(&sqlite, "NOPE", None, None, 100, 50).unwrap();
    put_stockx_variants(
        &sqlite,
        "p-1",
        &[VariantRow {
            size_keys: vec!["10".into(), "us m 10".into()],
            variant_id: "v-10".into(),
        }],
        100,
        50,
    )
    .unwrap();
    put_alias_item(&sqlite, "DD1391-100", Some("dunk"), &[9.5, 10.0], 100, 50).unwrap();
    let (max_job, max_run, max_pass): (i64, i64, i64) = sqlite.with_conn(|conn| {
        conn.query_row(
            "SELECT (SELECT MAX(id) FROM jobs), (SELECT MAX(id) FROM job_runs), (SELECT MAX(id) FROM market_job_runs)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap()
    });
    drop(sqlite);

    let db = TestDb::create();
    let url = crate::store::postgres::DatabaseUrl::new(&db.url).expect("url");
    let checks =
        crate::store::postgres::copy::copy_sqlite_to_postgres(&path, &url, false, &mut |_, _| {})
            .expect("copy");
    for table in [
        "jobs",
        "market_prices",
        "job_runs",
        "stockx_styles",
        "stockx_products",
        "stockx_variants",
        "tracked_items",
        "market_job_runs",
        "alias_catalog",
    ] {
        let check = checks
            .iter()
            .find(|check| check.table == table)
            .expect(table);
        assert!(check.ok(), "{check:?}");
        assert!(check.source_rows > 0, "{table} was copied empty");
    }
    assert!(checks.iter().all(|check| check.ok()), "{checks:?}");

    let pg = PgLedger::open(&db.url, &PgSettings::default()).expect("open");
    // The copy reads back as the source was read.
    assert_eq!(
        format!("{:?}", list_jobs(&pg, None, 100).unwrap()),
        source_reads[source_reads.len() - 5]
    );
    assert_eq!(
        format!("{:?}", market_prices(&pg, 100).unwrap()),
        source_reads[source_reads.len() - 4]
    );
    assert_eq!(
        cached_alias_item(&pg, "DD1391-100", 120).unwrap(),
        Some(CachedAliasItem::Item {
            catalog_id: "dunk".into(),
            sizes: vec![9.5, 10.0]
        })
    );
    assert_eq!(
        cached_stockx_variant(&pg, "p-1", "us m 10", 120).unwrap(),
        CachedVariant::Variant {
            variant_id: "v-10".into()
        }
    );
    // Identities continue above the copied ids.
    let new_job = put(&pg, job("keepa", "B0NEW", None, JobPriority::Hot), 500).id();
    assert_eq!(new_job, max_job + 1);
    assert_eq!(record_run(&pg, &run).unwrap(), max_run + 1);
    assert_eq!(
        tracked::record_pass(&pg, &pass("keepa", 2000)).unwrap(),
        max_pass + 1
    );
}
