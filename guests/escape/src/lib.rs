//! Hostile: tries every way out of the WASI sandbox a guest can name with `std`: files (read,
//! write, list), environment variables and arguments, sockets (a TCP connect to cloud metadata
//! and to the host's loopback, a name lookup), and a flood of stdout. One record says what
//! each attempt got; the host must have contained all of them.

use std::io::Write as _;

use sluice_guest::{Config, Error, Flows, Output, Transform};

/// Tries to escape.
pub struct Escape {
    flood_lines: u64,
}

fn outcome<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ALLOWED".into(),
        Err(e) => format!("refused: {}", e.kind()),
    }
}

impl Transform for Escape {
    fn init(config: &Config) -> Result<Self, Error> {
        Ok(Escape {
            flood_lines: config.u64("flood_lines").unwrap_or(100_000),
        })
    }

    fn transform(&mut self, _flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
        let read = outcome(std::fs::read("/etc/passwd"));
        let write = outcome(std::fs::write("/tmp/sluice-escape", b"x"));
        let list = outcome(std::fs::read_dir("/").map(|d| d.count()));
        let env = std::env::vars().count() as i64;
        let args = std::env::args().count() as i64;
        let metadata = outcome(std::net::TcpStream::connect("169.254.169.254:80"));
        let loopback = outcome(std::net::TcpStream::connect("127.0.0.1:22"));
        let lookup = outcome(std::net::ToSocketAddrs::to_socket_addrs("localhost:80"));
        let mut stdout = std::io::stdout();
        for i in 0..self.flood_lines {
            let _ = writeln!(stdout, "flood line {i} {}", "y".repeat(200));
        }
        out.record()
            .str("Read", &read)
            .str("Write", &write)
            .str("List", &list)
            .int("Env", env)
            .int("Args", args)
            .str("Metadata", &metadata)
            .str("Loopback", &loopback)
            .str("Lookup", &lookup);
        Ok(())
    }
}

sluice_guest::export_transform!(Escape);
