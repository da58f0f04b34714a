//! The `odata` adapter in front of three instances of a small
//! OData-shaped service (`tests/odata/backend.py`), which names its
//! entities by absolute URIs under its own root and refuses a bind to an
//! entity that is not its own.

mod common;

use common::{Backends, Cluster, Options, get_fresh, must};
use serde_json::Value;

fn json(r: &common::Resp) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

#[test]
fn feeds_name_ordo_and_binds_reach_each_backend_as_its_own() {
    let c = Cluster::start(Options {
        backends: Backends::OData,
        prefix: "/odata".into(),
        service_extra: "adapter = \"odata\"".into(),
        ..Options::default()
    });
    let root = |i: usize| c.nodes[i].url("/odata");
    // A bind names an entity by ordo's address, as the client knows it.
    let r = must(
        "POST",
        &c.nodes[0].url("/odata/Movies"),
        &[("content-type", "application/json")],
        Some(
            format!(
                r#"{{"Title":"Brazil","Director@odata.bind":"{}/People(7)"}}"#,
                root(0)
            )
            .as_bytes(),
        ),
    );
    // 201 means the three backends answered alike (the default answer
    // waits for a majority to agree): each named its own root, mapped.
    assert_eq!(r.status, 201, "{r:?}");
    let made = format!("{}/Movies(1)", root(0));
    assert_eq!(r.header("location"), Some(made.as_str()), "{r:?}");
    assert_eq!(r.header("odata-entityid"), Some(made.as_str()), "{r:?}");
    assert_eq!(json(&r)["@odata.id"], made.as_str());

    // JSON through another node names that node.
    let r = get_fresh(&c.nodes[1].url("/odata/Movies(1)"));
    assert_eq!(r.status, 200, "{r:?}");
    let v = json(&r);
    assert_eq!(v["@odata.id"], format!("{}/Movies(1)", root(1)));
    assert_eq!(
        v["@odata.context"],
        format!("{}/$metadata#Movies/$entity", root(1))
    );
    assert_eq!(
        v["Director@odata.navigationLink"],
        format!("{}/People(7)", root(1))
    );
    // Atom through a third.
    let r = get_fresh(&c.nodes[2].url("/odata/Movies?$format=atom"));
    assert_eq!(r.status, 200, "{r:?}");
    let base = root(2);
    for want in [
        format!("xml:base=\"{base}/\""),
        format!("<id>{base}/Movies</id>"),
        format!("<id>{base}/Movies(1)</id>"),
        format!("href=\"{base}/Movies(1)\""),
    ] {
        assert!(r.body.contains(&want), "{want} in {}", r.body);
    }
    for n in &c.nodes {
        assert!(
            !r.body.contains(&format!("127.0.0.1:{}", n.backend_port)),
            "a backend's address leaked: {}",
            r.body
        );
    }
    // Every backend stored the same entity, bound to its own People(7).
    c.wait_caught_up();
    for n in &c.nodes {
        let r = must("GET", &n.backend_url("/_state"), &[], None);
        assert_eq!(
            json(&r),
            serde_json::json!({"1": {"Title": "Brazil", "Director": 7}}),
            "{}'s backend",
            n.name
        );
    }
}
