//! A small MCP client: starts codex-async-mcp over stdio, starts one job, waits for it to settle
//! and prints its result.
//!
//! ```sh
//! cargo run --example start_and_wait -- "Say hello" [path/to/codex-async-mcp]
//! ```
//! Without a path it runs `codex-async-mcp` from PATH. Codex must be set up to reach a model.

// This client's stdout is its own, not an MCP channel.
#![allow(clippy::print_stdout)]

use std::process::Stdio;

use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

fn tool(name: &'static str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else {
        unreachable!("arguments are built as objects below")
    };
    CallToolRequestParams::new(name).with_arguments(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let prompt = args.next().unwrap_or_else(|| "Say hello".to_owned());
    let server = args.next().unwrap_or_else(|| "codex-async-mcp".to_owned());

    let mut child = tokio::process::Command::new(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        anyhow::bail!("the server's stdio was not piped");
    };
    let client = ().serve((stdout, stdin)).await?;

    let started = client
        .call_tool(tool("job_start", json!({ "prompt": prompt })))
        .await?;
    let job_id = started
        .structured_content
        .as_ref()
        .and_then(|s| s["job_id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("job_start failed: {:?}", started.content))?;
    eprintln!("started {job_id}");

    // job_wait blocks for at most its timeout; loop until the job's turn settles.
    loop {
        let waited = client
            .call_tool(tool(
                "job_wait",
                json!({ "job_id": job_id, "timeout_seconds": 60 }),
            ))
            .await?;
        let answer = waited.structured_content.unwrap_or_default();
        if let Some(note) = answer["notifications"].as_array().and_then(|n| n.last()) {
            eprintln!("status: {}", note["status"]);
            let text = note["result"]
                .as_str()
                .or(note["error"].as_str())
                .unwrap_or("");
            println!("{text}");
            break;
        }
    }
    client.cancel().await?;
    Ok(())
}
