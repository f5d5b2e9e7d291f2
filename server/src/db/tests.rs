//! Every query against a fresh, migrated SQLite database per test (`#[sqlx::test]`).

use sqlx::SqlitePool;

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

async fn with_tenants(pool: &SqlitePool) -> Db {
    let store = Db::from_pool(pool.clone());
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

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn tenants_insert_list_get_delete(pool: SqlitePool) {
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
    let dup = tenants::insert(&pool, &tenant("t3", "one"))
        .await
        .unwrap_err();
    assert!(matches!(dup, sqlx::Error::Database(e) if e.is_unique_violation()));
    assert!(tenants::delete(&store, "t1").await.unwrap());
    assert!(!tenants::delete(&store, "t1").await.unwrap());
    assert_eq!(tenants::get(&store, "t1").await.unwrap(), None);
    // Its token went with it.
    assert_eq!(tokens::tenant_of_hash(&store, "hash1").await.unwrap(), None);
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn tokens_insert_lookup_list_delete(pool: SqlitePool) {
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

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn pipelines_are_scoped_to_their_tenant(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    store
        .create_pipeline(&pipeline("p1", "t1"), &[], None, 10)
        .await
        .unwrap();
    store
        .create_pipeline(&pipeline("p2", "t2"), &[], None, 10)
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
    assert_eq!(pipelines::count_for_tenant(&pool, "t1").await.unwrap(), 1);
    let mut changed = pipeline("p1", "t1");
    changed.definition = "host_id: x\n".into();
    changed.host_id = "x".into();
    changed.spool_bytes = 1000;
    changed.updated_at = 3;
    assert!(pipelines::update_definition(&pool, &changed).await.unwrap());
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
    assert!(pipelines::delete(&pool, "p2").await.unwrap());
    assert!(!pipelines::delete(&pool, "p2").await.unwrap());
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn pipeline_limit_is_enforced_atomically(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    store
        .create_pipeline(&pipeline("p1", "t1"), &[], None, 2)
        .await
        .unwrap();
    store
        .create_pipeline(&pipeline("p2", "t1"), &[], None, 2)
        .await
        .unwrap();
    let err = store
        .create_pipeline(&pipeline("p3", "t1"), &[], None, 2)
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineWriteError::LimitReached { limit: 2 }));
    assert_eq!(pipelines::count_for_tenant(&pool, "t1").await.unwrap(), 2);
    // Another tenant has its own budget.
    store
        .create_pipeline(&pipeline("p4", "t2"), &[], None, 2)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn a_host_id_is_leased_once_per_analyzer(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    let a = lease_request("ws://a/ws/subscriber/flow", "h1", "node1");
    store
        .create_pipeline(&pipeline("p1", "t1"), &[], Some(&a), 10)
        .await
        .unwrap();
    // Same key, another tenant: conflict naming the holder; nothing was created.
    let err = store
        .create_pipeline(&pipeline("p2", "t2"), &[], Some(&a), 10)
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
        .create_pipeline(&pipeline("p3", "t2"), &[], Some(&b), 10)
        .await
        .unwrap();
    assert_eq!(leases::list(&store).await.unwrap().len(), 2);
    // Deleting the holder releases the lease.
    assert!(store.delete_pipeline("p1").await.unwrap());
    assert!(leases::for_pipeline(&store, "p1").await.unwrap().is_none());
    store
        .create_pipeline(&pipeline("p2", "t2"), &[], Some(&a), 10)
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

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn expired_leases_of_other_nodes_are_reclaimed(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    let mut old = lease_request("ws://a", "h1", "dead-node");
    old.expires_at = crate::now_ms() - 1_000;
    store
        .create_pipeline(&pipeline("p1", "t1"), &[], Some(&old), 10)
        .await
        .unwrap();
    // The same node never reclaims its own (its pipeline still runs there).
    let mut same = old.clone();
    same.expires_at = crate::now_ms() + 30_000;
    assert_eq!(
        leases::reclaim_expired(&pool, &old.key, "dead-node", crate::now_ms())
            .await
            .unwrap(),
        0
    );
    // Another node takes it over once it expired.
    same.node = "live-node".into();
    store
        .create_pipeline(&pipeline("p2", "t2"), &[], Some(&same), 10)
        .await
        .unwrap();
    let holder = leases::holder(&store, &old.key).await.unwrap().unwrap();
    assert_eq!(
        (holder.pipeline_id.as_str(), holder.node.as_str()),
        ("p2", "live-node")
    );
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn leases_renew_and_adopt(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    store
        .create_pipeline(
            &pipeline("p1", "t1"),
            &[],
            Some(&lease_request("ws://a", "h1", "n1")),
            10,
        )
        .await
        .unwrap();
    store
        .create_pipeline(
            &pipeline("p2", "t1"),
            &[],
            Some(&lease_request("ws://a", "h2", "n2")),
            10,
        )
        .await
        .unwrap();
    assert_eq!(leases::renew(&store, "n1", 99).await.unwrap(), 1);
    assert_eq!(
        leases::for_pipeline(&store, "p1")
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        99
    );
    assert!(leases::adopt(&store, "p2", "n1", 77).await.unwrap());
    let p2 = leases::for_pipeline(&store, "p2").await.unwrap().unwrap();
    assert_eq!((p2.node.as_str(), p2.expires_at), ("n1", 77));
    assert!(!leases::adopt(&store, "nope", "n1", 77).await.unwrap());
    assert_eq!(leases::release_pipeline(&pool, "p2").await.unwrap(), 1);
    assert_eq!(leases::list(&store).await.unwrap().len(), 1);
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn replace_moves_or_keeps_the_lease(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    let a = lease_request("ws://a", "h1", "n1");
    store
        .create_pipeline(&pipeline("p1", "t1"), &[], Some(&a), 10)
        .await
        .unwrap();
    store
        .create_pipeline(
            &pipeline("p2", "t1"),
            &[],
            Some(&lease_request("ws://a", "h2", "n1")),
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

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn account_saves_loads_and_deletes(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    store
        .create_pipeline(&pipeline("p1", "t1"), &[], None, 10)
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
    account::save(&store, &row).await.unwrap();
    row.flows_received = 20;
    account::save(&store, &row).await.unwrap();
    let loaded = account::load(&store, "p1").await.unwrap().unwrap();
    assert_eq!(loaded, row);
    assert_eq!(loaded.dropped_map()["filtered"], 2);
    // An account needs its pipeline.
    row.pipeline_id = "nope".into();
    assert!(account::save(&store, &row).await.is_err());
    assert!(account::delete(&pool, "p1").await.unwrap());
    assert!(store.delete_pipeline("p1").await.unwrap());
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn ping_answers(pool: SqlitePool) {
    assert!(Db::from_pool(pool).ping().await);
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

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn modules_insert_get_list_delete_per_tenant(pool: SqlitePool) {
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

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn module_users_and_spool_bytes_are_read_from_columns(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    let mut p1 = pipeline("p1", "t1");
    p1.spool_bytes = 100;
    let mut p2 = pipeline("p2", "t1");
    p2.spool_bytes = 50;
    let uses = |digest: &str| vec![("transform", digest.to_string())];
    store
        .create_pipeline(&p1, &uses("aa"), None, 10)
        .await
        .unwrap();
    store
        .create_pipeline(
            &p2,
            &[("mangle", "aa".into()), ("transform", "bb".into())],
            None,
            10,
        )
        .await
        .unwrap();
    store
        .create_pipeline(&pipeline("p3", "t2"), &uses("aa"), None, 10)
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

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn a_tenants_cached_list_follows_every_write(pool: SqlitePool) {
    let store = with_tenants(&pool).await;
    let ids = |list: &[PipelineRow]| list.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert!(store.pipeline_list("t1").await.unwrap().is_empty());
    let p1 = pipeline("p1", "t1");
    store.create_pipeline(&p1, &[], None, 10).await.unwrap();
    assert_eq!(ids(&store.pipeline_list("t1").await.unwrap()), ["p1"]);
    let mut p2 = pipeline("p2", "t1");
    p2.created_at += 1;
    store.create_pipeline(&p2, &[], None, 10).await.unwrap();
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
