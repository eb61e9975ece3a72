//! End to end over real WireGuard on loopback UDP: two (or three) real Nodes, the real API.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_route_through_the_tunnel() {
    tokio::time::timeout(T, async {
        let p = pair().await;
        let mut c = Http::connect(&p.control, api_addr()).await.unwrap();
        let (s, v) = c.call("GET", "/api/v0/health", None).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
        let (s, v) = c
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "echo through-the-tunnel"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (s, v) = c
            .call(
                "GET",
                &format!("/api/v0/processes/{id}/output?wait=true"),
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["output"], "through-the-tunnel\n");
        assert_eq!(v["exit_code"], 0);
        let (s, v) = c.call("GET", "/api/v0/processes/list", None).await;
        assert_eq!(s, 200);
        assert_eq!(v["processes"][0]["id"], id.as_str());
        let (_, v) = c
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "sleep 300"})),
            )
            .await;
        let sleeper = v["id"].as_str().unwrap().to_owned();
        let (s, _) = c
            .call(
                "POST",
                &format!("/api/v0/processes/{sleeper}/signal"),
                Some(json!({"signal": "kill"})),
            )
            .await;
        assert_eq!(s, 200);
        let (_, v) = c
            .call(
                "GET",
                &format!("/api/v0/processes/{sleeper}/output?wait=true"),
                None,
            )
            .await;
        assert_eq!(v["running"], false);
        let (s, _) = c
            .call("DELETE", &format!("/api/v0/processes/{sleeper}"), None)
            .await;
        assert_eq!(s, 200);
        let (s, v) = c.call("GET", "/api/v0/nowhere", None).await;
        assert_eq!(s, 404, "{v}");
        let stats = p.agent.stats();
        assert!(stats.wg.peers[0].handshakes >= 1);
        assert!(stats.wg.peers[0].rx_packets > 0);
    })
    .await
    .unwrap();
}
