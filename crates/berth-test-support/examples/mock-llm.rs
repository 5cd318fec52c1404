//! Runs the scripted mock LLM on its own, for trying a real agent CLI against it by hand:
//! prints its URL, then every second rewrites the file given as the first argument (default
//! `mock-llm-requests.json`) with the requests received so far. Stop it with Ctrl-C.

use berth_test_support::mock_llm::MockLlm;

#[tokio::main]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mock-llm-requests.json".into());
    let mock = MockLlm::start().await;
    println!("{}", mock.url());
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let reqs: Vec<serde_json::Value> = mock
            .requests()
            .into_iter()
            .map(|r| serde_json::json!({"method": r.method, "path": r.path, "body": r.body}))
            .collect();
        if let Err(e) = std::fs::write(&out, format!("{:#}\n", serde_json::Value::from(reqs))) {
            eprintln!("writing {out}: {e}");
        }
    }
}
