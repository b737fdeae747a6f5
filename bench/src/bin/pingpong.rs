//! The latency floor of any broker on this machine: a bare TCP ping-pong over loopback between
//! two processes. This process starts a copy of itself as the echo server, then times round
//! trips of a small message.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Time TCP round trips over loopback between two processes")]
struct Args {
    /// Round trips to time (after 10% as warm-up).
    #[arg(long, default_value_t = 100_000)]
    round_trips: u64,
    /// Bytes per message each way.
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
    /// Internal: run as the echo server on this listener address.
    #[arg(long, hide = true)]
    serve: Option<String>,
}

fn serve(address: &str, message_bytes: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(address)?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; message_bytes];
    loop {
        if stream.read_exact(&mut buffer).is_err() {
            return Ok(());
        }
        stream.write_all(&buffer)?;
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if let Some(address) = &args.serve {
        return serve(address, args.message_bytes).map_err(|error| error.to_string());
    }
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut server = Command::new(exe)
        .args([
            "--serve",
            "127.0.0.1:0",
            "--message-bytes",
            &args.message_bytes.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| error.to_string())?;
    let mut address = String::new();
    {
        use std::io::BufRead;
        let stdout = server.stdout.take().ok_or("no server stdout")?;
        std::io::BufReader::new(stdout)
            .read_line(&mut address)
            .map_err(|error| error.to_string())?;
    }
    let mut stream = TcpStream::connect(address.trim()).map_err(|error| error.to_string())?;
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let message = vec![7u8; args.message_bytes];
    let mut reply = vec![0u8; args.message_bytes];
    let mut histogram = bench::latency_histogram();
    let warmup = args.round_trips / 10;
    for index in 0..warmup + args.round_trips {
        let started = Instant::now();
        stream
            .write_all(&message)
            .map_err(|error| error.to_string())?;
        stream
            .read_exact(&mut reply)
            .map_err(|error| error.to_string())?;
        if index >= warmup {
            histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
        }
    }
    drop(stream);
    server.wait().ok();
    println!(
        "loopback ping-pong, {} bytes each way: {}",
        args.message_bytes,
        bench::percentiles_line(&histogram)
    );
    Ok(())
}
