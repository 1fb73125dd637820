//! Runs the benchmark until `cosell-sync bench` exists:
//! `cargo build --release && cargo run --release --example bench -- \
//!   --engine target/release/cosell-sync --out bench.json [--sizes 1000,10000] [--smoke]`
//! Prints the tables; writes the JSON result to `--out`.

use cosell_sync::bench::{self, BenchOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = BenchOptions::standard();
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--smoke" => {
                let engine = opts.engine_binary.take();
                opts = BenchOptions {
                    engine_binary: engine,
                    ..BenchOptions::smoke()
                };
            }
            "--sizes" => {
                opts.sizes = args
                    .next()
                    .ok_or("--sizes needs a list")?
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse())
                    .collect::<Result<_, _>>()?;
            }
            "--engine" => {
                opts.engine_binary = Some(args.next().ok_or("--engine needs a path")?.into())
            }
            "--out" => out = Some(args.next().ok_or("--out needs a path")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let report = bench::run(opts, |line| eprintln!("{line}")).await?;
    println!("{}", bench::render_table(&report));
    if let Some(path) = out {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
        eprintln!("wrote {path}");
    }
    Ok(())
}
