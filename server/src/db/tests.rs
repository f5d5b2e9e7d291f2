//! Every query against a fresh, migrated database per test: SQLite in memory, and PostgreSQL
//! when the tests are given a server (`testing.rs`).

use sqlx::AnyPool;

use super::account::{self, AccountRow};
use super::*;

fn tenant(id: &str, name: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: name.into(),
        created_at: 1_000,
    }
}

fn pipeline(id: &str, tenant: &str) -> PipelineRow {
    PipelineRow {
        id: id.into(),
        tenant_id: tenant.into(),
        definition: "pipeline: {}\n".into(),
        desired_state: DesiredState::Running,
        created_at: 2_000,
        updated_at: 2_000,
        analyzer: "ws://127.0.0.1:8082/ws/subscriber/flow".into(),
        host_id: String::new(),
        spool_bytes: 0,
    }
}

fn lease_request(analyzer: &str, host_id: &str, node: &str) -> LeaseRequest {
    LeaseRequest {
        key: LeaseKey {
            analyzer: analyzer.into(),
            host_id: host_id.into(),
        },
        node: node.into(),
        expires_at: crate::now_ms() + 30_000,
    }
}

/// A test's database, whose pool the table functions also take (`&*pool`).
struct TestPool(Db);

impl std::ops::Deref for TestPool {
    type Target = AnyPool;

    fn deref(&self) -> &AnyPool {
        &self.0.pool
    }
}

/// `async fn name(pool) { ... }` run once per database of [`super::testing::databases`].
macro_rules! on_each_backend {
    (async fn $name:ident($pool:ident) $body:block) => {
        #[tokio::test]
        async fn $name() {
            for test in super::testing::databases().await {
                let $pool = TestPool(test.db.clone());
                $body
                test.finish().await;
            }
        }
    };
}

async fn with_tenants(pool: &TestPool) -> Db {
    let store = pool.0.clone();
    store
        .create_tenant(&tenant("t1", "one"), "k1", "hash1")
        .await
        .unwrap();
    store
        .create_tenant(&tenant("t2", "two"), "k2", "hash2")
        .await
        .unwrap();
    store
}

on_each_backend! {
    async fn tenants_insert_list_get_delete(pool) {
        let store = with_tenants(&pool).await;
        let all = tenants::list(&store).await.unwrap();
        assert_eq!(
            all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(
            tenants::get(&store, "t1").await.unwrap(),
            Some(tenant("t1", "one"))
        );
        let dup = tenants::insert(&*pool, &tenant("t3", "one"))
            .await
            .unwrap_err();
        assert!(matches!(dup, sqlx::Error::Database(e) if e.is_unique_violation()));
        assert!(tenants::delete(&store, "t1").await.unwrap());
        assert!(!tenants::delete(&store, "t1").await.unwrap());
        assert_eq!(tenants::get(&store, "t1").await.unwrap(), None);
        // Its token went with it.
        assert_eq!(tokens::tenant_of_hash(&store, "hash1").await.unwrap(), None);
    }
}

on_each_backend! {
    async fn tokens_insert_lookup_list_delete(pool) {
        let store = with_tenants(&pool).await;
        tokens::insert(&store, "k3", "t1", "hash3", 5)
            .await
            .unwrap();
        assert_eq!(
            tokens::tenant_of_hash(&store, "hash3")
                .await
                .unwrap()
                .as_deref(),
            Some("t1")
        );
        assert_eq!(tokens::tenant_of_hash(&store, "nope").await.unwrap(), None);
        let ids: Vec<String> = tokens::list(&store, "t1")
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["k3", "k1"]);
        // A tenant can't revoke through another tenant's id.
        assert!(!tokens::delete(&store, "t2", "k3").await.unwrap());
        assert!(tokens::delete(&store, "t1", "k3").await.unwrap());
        assert_eq!(tokens::tenant_of_hash(&store, "hash3").await.unwrap(), None);
    }
}

on_each_backend! {
    async fn pipelines_are_scoped_to_their_tenant(pool) {
        let store = with_tenants(&pool).await;
        store
            .create_pipeline(&pipeline("p1", "t1"), &[], None, None, 10)
            .await
            .unwrap();
        store
            .create_pipeline(&pipeline("p2", "t2"), &[], None, None, 10)
            .await
            .unwrap();
        assert!(
            pipelines::get(&store, "p1", Some("t1"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            pipelines::get(&store, "p1", Some("t2"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(pipelines::get(&store, "p1", None).await.unwrap().is_some());
        assert_eq!(pipelines::list(&store, Some("t2")).await.unwrap().len(), 1);
        assert_eq!(pipelines::list(&store, None).await.unwrap().len(), 2);
        assert_eq!(pipelines::count_for_tenant(&*pool, "t1").await.unwrap(), 1);
        let mut changed = pipeline("p1", "t1");
        changed.definition = "host_id: x\n".into();
        changed.host_id = "x".into();
        changed.spool_bytes = 1000;
        changed.updated_at = 3;
        assert!(pipelines::update_definition(&*pool, &changed).await.unwrap());
        assert!(
            pipelines::set_desired(&store, "p1", DesiredState::Stopped, 4)
                .await
                .unwrap()
        );
        let p1 = pipelines::get(&store, "p1", None).await.unwrap().unwrap();
        assert_eq!(
            (
                p1.definition.as_str(),
                p1.desired_state,
                p1.updated_at,
                p1.host_id.as_str(),
                p1.spool_bytes
            ),
            ("host_id: x\n", DesiredState::Stopped, 4, "x", 1000)
        );
        assert!(
            !pipelines::set_desired(&store, "nope", DesiredState::Running, 4)
                .await
                .unwrap()
        );
        assert!(pipelines::delete(&*pool, "p2").await.unwrap());
        assert!(!pipelines::delete(&*pool, "p2").await.unwrap());
    }
}

on_each_backend! {
    async fn pipeline_limit_is_enforced_atomically(pool) {
        let store = with_tenants(&pool).await;
        store
            .create_pipeline(&pipeline("p1", "t1"), &[], None, None, 2)
            .await
            .unwrap();
        store
            .create_pipeline(&pipeline("p2", "t1"), &[], None, None, 2)
            .await
            .unwrap();
        let err = store
            .create_pipeline(&pipeline("p3", "t1"), &[], None, None, 2)
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineWriteError::LimitReached { limit: 2 }));
        assert_eq!(pipelines::count_for_tenant(&*pool, "t1").await.unwrap(), 2);
        // Another tenant has its own budget.
        store
            .create_pipeline(&pipeline("p4", "t2"), &[], None, None, 2)
            .await
            .unwrap();
    }
}

on_each_backend! {
    async fn a_host_id_is_leased_once_per_analyzer(pool) {
        let store = with_tenants(&pool).await;
        let a = lease_request("ws://a/ws/subscriber/flow", "h1", "node1");
        store
            .create_pipeline(&pipeline("p1", "t1"), &[], Some(&a), None, 10)
            .await
            .unwrap();
        // Same key, another tenant: conflict naming the holder; nothing was created.
        let err = store
            .create_pipeline(&pipeline("p2", "t2"), &[], Some(&a), None, 10)
            .await
            .unwrap_err();
        match err {
            PipelineWriteError::LeaseConflict(holder) => {
                assert_eq!(
                    (holder.pipeline_id.as_str(), holder.tenant_id.as_str()),
                    ("p1", "t1")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(pipelines::get(&store, "p2", None).await.unwrap().is_none());
        // Same host_id on another analyzer is fine.
        let b = lease_request("ws://b/ws/subscriber/flow", "h1", "node1");
        store
            .create_pipeline(&pipeline("p3", "t2"), &[], Some(&b), None, 10)
            .await
            .unwrap();
        assert_eq!(leases::list(&store).await.unwrap().len(), 2);
        // Deleting the holder releases the lease.
        assert!(store.delete_pipeline("p1").await.unwrap());
        assert!(leases::for_pipeline(&store, "p1").await.unwrap().is_none());
        store
            .create_pipeline(&pipeline("p2", "t2"), &[], Some(&a), None, 10)
            .await
            .unwrap();
        assert_eq!(
            leases::holder(&store, &a.key)
                .await
                .unwrap()
                .unwrap()
                .pipeline_id,
            "p2"
        );
    }
}

on_each_backend! {
    async fn an_expired_lease_is_not_reclaimed_while_its_pipeline_exists(pool) {
        let store = with_tenants(&pool).await;
        let mut old = lease_request("ws://a", "h1", "dead-node");
        old.expires_at = crate::now_ms() - 1_000;
        store
            .create_pipeline(&pipeline("p1", "t1"), &[], Some(&old), None, 10)
            .await
            .unwrap();
        // Its pipeline goes to another node with its lease: a second pipeline on the same
        // host_id would subscribe beside it.
        let mut other = old.clone();
        other.node = "live-node".into();
        let refused = store
            .create_pipeline(&pipeline("p2", "t2"), &[], Some(&other), None, 10)
            .await
            .unwrap_err();
        assert!(matches!(refused, PipelineWriteError::LeaseConflict(h) if h.pipeline_id == "p1"));
    }
}

on_each_backend! {
    async fn nodes_register_heartbeat_drain_and_count_their_pipelines(pool) {
        let store = with_tenants(&pool).await;
        nodes::register(&store, "n1", "127.0.0.1:1", 100).await.unwrap();
        nodes::register(&store, "n2", "127.0.0.1:2", 100).await.unwrap();
        assert_eq!(nodes::heartbeat(&store, "n1", 200).await.unwrap(), Some(false));
        assert_eq!(nodes::heartbeat(&store, "gone", 200).await.unwrap(), None);
        let placed = Placement { node: "n1".into(), expires_at: 1_000 };
        store
            .create_pipeline(&pipeline("p1", "t1"), &[], None, Some(&placed), 10)
            .await
            .unwrap();
        let all = nodes::list(&store).await.unwrap();
        assert_eq!(
            all.iter().map(|n| (n.id.as_str(), n.heartbeat_at, n.pipelines)).collect::<Vec<_>>(),
            [("n1", 200, 1), ("n2", 100, 0)]
        );
        // Live since 150 at 500: only n1, holding one unexpired lease.
        assert_eq!(
            ownership::placement_counts(&store, 150, 500).await.unwrap(),
            [("n1".to_string(), 1)]
        );
        assert!(nodes::set_draining(&store, "n1").await.unwrap());
        assert_eq!(nodes::heartbeat(&store, "n1", 300).await.unwrap(), Some(true));
        assert!(ownership::placement_counts(&store, 150, 500).await.unwrap().is_empty());
        assert!(!nodes::set_draining(&store, "nope").await.unwrap());
        // A restart clears the drain.
        nodes::register(&store, "n1", "127.0.0.1:1", 400).await.unwrap();
        assert_eq!(nodes::heartbeat(&store, "n1", 400).await.unwrap(), Some(false));
    }
}

on_each_backend! {
    async fn a_takeover_increments_the_generation_and_fences_the_old_holder(pool) {
        let store = with_tenants(&pool).await;
        let lease = lease_request("ws://a", "h1", "n1");
        let placed = Placement { node: "n1".into(), expires_at: 1_000 };
        store
            .create_pipeline(&pipeline("p1", "t1"), &[], Some(&lease), Some(&placed), 10)
            .await
            .unwrap();
        let counters = account::AccountRow {
            pipeline_id: "p1".into(),
            flows_received: 5,
            dropped: "{}".into(),
            ..Default::default()
        };
        account::save(&store, &counters, "n1", 1).await.unwrap();
        // Renewed while unexpired; not once expired (it is taken over, never revived).
        assert_eq!(ownership::renew(&store, "n1", 900, 2_000).await.unwrap(), 1);
        assert_eq!(ownership::renew(&store, "n1", 2_500, 3_000).await.unwrap(), 0);
        assert_eq!(ownership::held_by(&store, "n1").await.unwrap()[0].expires_at, 2_000);
        // Not expired before 2000: nothing to take.
        assert!(ownership::claimable(&store, 2_000).await.unwrap().is_empty());
        assert_eq!(ownership::take(&store, "p1", Some(1), "n2", 2_000, 9_000).await.unwrap(), None);
        let up = ownership::claimable(&store, 2_001).await.unwrap();
        assert_eq!(up, [ownership::Claimable { pipeline_id: "p1".into(), generation: Some(1) }]);
        assert_eq!(ownership::take(&store, "p1", Some(1), "n2", 2_001, 9_000).await.unwrap(), Some(2));
        // Racing for the same generation again loses.
        assert_eq!(ownership::take(&store, "p1", Some(1), "n3", 2_001, 9_000).await.unwrap(), None);
        // The host_id lease followed.
        assert_eq!(leases::for_pipeline(&store, "p1").await.unwrap().unwrap().node, "n2");
        // The old holder's writes are refused.
        let stale = account::save(&store, &counters, "n1", 1).await.unwrap_err();
        assert!(matches!(stale, DbError::Stale { generation: 1, .. }), "{stale}");
        let status = ownership::Published {
            state: "running",
            connected: true,
            restarts: 0,
            last_error: None,
        };
        assert!(matches!(
            ownership::publish(&store, "p1", "n1", 1, &status, 5).await,
            Err(DbError::Stale { .. })
        ));
        ownership::publish(&store, "p1", "n2", 2, &status, 5).await.unwrap();
        account::save(&store, &counters, "n2", 2).await.unwrap();
        let owner = ownership::owner(&store, "p1").await.unwrap().unwrap();
        assert_eq!(
            (owner.node.as_str(), owner.generation, owner.state.as_str(), owner.connected, owner.status_at),
            ("n2", 2, "running", 1, 5)
        );
        assert_eq!(ownership::owners(&store, Some("t1")).await.unwrap().len(), 1);
        assert!(ownership::owners(&store, Some("t2")).await.unwrap().is_empty());
        // A pipeline never placed is claimable at generation 1; a handed-over one at once.
        store
            .create_pipeline(&pipeline("p2", "t1"), &[], None, None, 10)
            .await
            .unwrap();
        assert_eq!(ownership::release_all(&store, "n2").await.unwrap(), 1);
        let up = ownership::claimable(&store, 1).await.unwrap();
        assert_eq!(
            up.iter().map(|c| (c.pipeline_id.as_str(), c.generation)).collect::<Vec<_>>(),
            [("p1", Some(2)), ("p2", None)]
        );
        assert_eq!(ownership::take(&store, "p2", None, "n1", 1, 9_000).await.unwrap(), Some(1));
        assert_eq!(ownership::take(&store, "p2", None, "n2", 1, 9_000).await.unwrap(), None);
        assert_eq!(ownership::take(&store, "gone", None, "n2", 1, 9_000).await.unwrap(), None);
        // Deleting the pipeline drops its ownership row.
        assert!(store.delete_pipeline("p2").await.unwrap());
        assert!(ownership::owner(&store, "p2").await.unwrap().is_none());
    }
}

on_each_backend! {
    async fn replace_moves_or_keeps_the_lease(pool) {
        let store = with_tenants(&pool).await;
        let a = lease_request("ws://a", "h1", "n1");
        store
            .create_pipeline(&pipeline("p1", "t1"), &[], Some(&a), None, 10)
            .await
            .unwrap();
        store
            .create_pipeline(
                &pipeline("p2", "t1"),
                &[],
                Some(&lease_request("ws://a", "h2", "n1")), None,
                10,
            )
            .await
            .unwrap();
        let mut p1 = pipeline("p1", "t1");
        p1.definition = "host_id: h1\n".into();
        // Same key: kept (not a conflict with itself).
        store.replace_pipeline(&p1, &[], Some(&a)).await.unwrap();
        // Onto p2's key: conflict, and p1 keeps its old definition and lease.
        p1.definition = "host_id: h2\n".into();
        let err = store
            .replace_pipeline(&p1, &[], Some(&lease_request("ws://a", "h2", "n1")))
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineWriteError::LeaseConflict(_)));
        let stored = pipelines::get(&store, "p1", None).await.unwrap().unwrap();
        assert_eq!(stored.definition, "host_id: h1\n");
        assert_eq!(
            leases::for_pipeline(&store, "p1")
                .await
                .unwrap()
                .unwrap()
                .host_id,
            "h1"
        );
        // To no host_id: released.
        store.replace_pipeline(&p1, &[], None).await.unwrap();
        assert!(leases::for_pipeline(&store, "p1").await.unwrap().is_none());
        // Unknown pipeline.
        let err = store
            .replace_pipeline(&pipeline("nope", "t1"), &[], None)
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineWriteError::NotFound));
    }
}

on_each_backend! {
    async fn account_saves_loads_and_deletes(pool) {
        let store = with_tenants(&pool).await;
        store
            .create_pipeline(
                &pipeline("p1", "t1"),
                &[],
                None,
                Some(&Placement { node: "n1".into(), expires_at: 1_000 }),
                10,
            )
            .await
            .unwrap();
        assert_eq!(account::load(&store, "p1").await.unwrap(), None);
        let mut row = AccountRow {
            pipeline_id: "p1".into(),
            flows_received: 10,
            records_written: 8,
            objects_written: 2,
            bytes_written: 300,
            write_errors: 1,
            dropped: r#"{"filtered":2}"#.into(),
            updated_at: 5,
        };
        account::save(&store, &row, "n1", 1).await.unwrap();
        row.flows_received = 20;
        account::save(&store, &row, "n1", 1).await.unwrap();
        let loaded = account::load(&store, "p1").await.unwrap().unwrap();
        assert_eq!(loaded, row);
        assert_eq!(loaded.dropped_map()["filtered"], 2);
        // An account needs its pipeline.
        row.pipeline_id = "nope".into();
        assert!(account::save(&store, &row, "n1", 1).await.is_err());
        assert!(account::delete(&*pool, "p1").await.unwrap());
        assert!(store.delete_pipeline("p1").await.unwrap());
    }
}

on_each_backend! {
    async fn ping_answers(pool) {
        assert!(pool.0.ping().await);
    }
}

fn module(digest: &str, tenant: &str, created_at: i64) -> ModuleRow {
    ModuleRow {
        digest: digest.into(),
        tenant_id: tenant.into(),
        size: 42,
        world: "transformer".into(),
        created_at,
    }
}

on_each_backend! {
    async fn modules_insert_get_list_delete_per_tenant(pool) {
        let store = with_tenants(&pool).await;
        assert!(
            modules::insert(&store, &module("aa", "t1", 1))
                .await
                .unwrap()
        );
        // The same bytes again: nothing changes, the first row stays.
        assert!(
            !modules::insert(&store, &module("aa", "t1", 5))
                .await
                .unwrap()
        );
        assert!(
            modules::insert(&store, &module("bb", "t1", 2))
                .await
                .unwrap()
        );
        // Another tenant may own the same digest.
        assert!(
            modules::insert(&store, &module("aa", "t2", 3))
                .await
                .unwrap()
        );
        assert_eq!(
            modules::get(&store, "t1", "aa").await.unwrap(),
            Some(module("aa", "t1", 1))
        );
        assert_eq!(modules::get(&store, "t2", "bb").await.unwrap(), None);
        let t1: Vec<_> = modules::list(&store, Some("t1"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.digest)
            .collect();
        assert_eq!(t1, ["aa", "bb"]);
        assert_eq!(modules::list(&store, None).await.unwrap().len(), 3);
        assert_eq!(modules::owners(&store, "aa").await.unwrap(), 2);
        assert!(!modules::delete(&store, "t2", "bb").await.unwrap());
        assert!(modules::delete(&store, "t1", "aa").await.unwrap());
        assert_eq!(modules::owners(&store, "aa").await.unwrap(), 1);
        assert_eq!(modules::get(&store, "t1", "aa").await.unwrap(), None);
        // A deleted tenant's modules go with it.
        assert!(tenants::delete(&store, "t2").await.unwrap());
        assert_eq!(modules::owners(&store, "aa").await.unwrap(), 0);
    }
}

on_each_backend! {
    async fn module_users_and_spool_bytes_are_read_from_columns(pool) {
        let store = with_tenants(&pool).await;
        let mut p1 = pipeline("p1", "t1");
        p1.spool_bytes = 100;
        let mut p2 = pipeline("p2", "t1");
        p2.spool_bytes = 50;
        let uses = |digest: &str| vec![("transform", digest.to_string())];
        store
            .create_pipeline(&p1, &uses("aa"), None, None, 10)
            .await
            .unwrap();
        store
            .create_pipeline(
                &p2,
                &[("mangle", "aa".into()), ("transform", "bb".into())],
                None, None,
                10,
            )
            .await
            .unwrap();
        store
            .create_pipeline(&pipeline("p3", "t2"), &uses("aa"), None, None, 10)
            .await
            .unwrap();
        assert_eq!(
            pipelines::users_of(&store, "t1", "aa").await.unwrap(),
            ["p1", "p2"]
        );
        assert_eq!(
            pipelines::users_of(&store, "t2", "aa").await.unwrap(),
            ["p3"]
        );
        assert_eq!(
            pipelines::spool_bytes_of(&store, "t1", "p1").await.unwrap(),
            50
        );
        assert_eq!(
            pipelines::spool_bytes_of(&store, "t1", "none")
                .await
                .unwrap(),
            150
        );
        // Replacing a pipeline replaces what it names; deleting it forgets it.
        store
            .replace_pipeline(&p1, &uses("cc"), None)
            .await
            .unwrap();
        assert_eq!(
            pipelines::users_of(&store, "t1", "aa").await.unwrap(),
            ["p2"]
        );
        store.delete_pipeline("p2").await.unwrap();
        assert!(
            pipelines::users_of(&store, "t1", "aa")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            pipelines::users_of(&store, "t1", "cc").await.unwrap(),
            ["p1"]
        );
    }
}

on_each_backend! {
    async fn a_tenants_cached_list_follows_every_write(pool) {
        let store = with_tenants(&pool).await;
        let ids = |list: &[PipelineRow]| list.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert!(store.pipeline_list("t1").await.unwrap().is_empty());
        let p1 = pipeline("p1", "t1");
        store.create_pipeline(&p1, &[], None, None, 10).await.unwrap();
        assert_eq!(ids(&store.pipeline_list("t1").await.unwrap()), ["p1"]);
        let mut p2 = pipeline("p2", "t1");
        p2.created_at += 1;
        store.create_pipeline(&p2, &[], None, None, 10).await.unwrap();
        let list = store.pipeline_list("t1").await.unwrap();
        assert_eq!(ids(&list), ["p1", "p2"]);
        assert_eq!(list[0].definition, "", "a list carries no definition");
        assert_eq!(list[0].analyzer, p1.analyzer);
        store
            .set_desired(&p1, DesiredState::Stopped, 5)
            .await
            .unwrap();
        assert_eq!(
            store.pipeline_list("t1").await.unwrap()[0].desired_state,
            DesiredState::Stopped
        );
        let mut changed = p2.clone();
        changed.host_id = "h9".into();
        store.replace_pipeline(&changed, &[], None).await.unwrap();
        assert_eq!(store.pipeline_list("t1").await.unwrap()[1].host_id, "h9");
        store.delete_pipeline("p1").await.unwrap();
        assert_eq!(ids(&store.pipeline_list("t1").await.unwrap()), ["p2"]);
        store.delete_tenant("t1").await.unwrap();
        assert!(store.pipeline_list("t1").await.unwrap().is_empty());
    }
}
