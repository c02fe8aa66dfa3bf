use std::time::{Duration, Instant};
use walredo::process::launch::Launcher;
use walredo::process::Process;
use walredo::Config;
fn main() {
    let extension = concat!(env!("CARGO_MANIFEST_DIR"), "/pg_walredo/pg_walredo.so");
    let l = Launcher::new(&Config {
        extension_path: Some(extension.into()),
        ..Config::default()
    })
    .unwrap();
    let mut p = Process::spawn(&l).unwrap();
    p.handshake(Duration::from_secs(10)).unwrap();
    drop(p);
    println!("template {:?}", l.template_pid());
    probe_dirs(&l);
    if std::env::args().any(|a| a == "--wait") {
        std::thread::sleep(Duration::from_secs(5));
    }
    for _ in 0..std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
    {
        let t = Instant::now();
        let mut p = Process::spawn(&l).unwrap();
        let a = t.elapsed();
        p.handshake(Duration::from_secs(10)).unwrap();
        let b = t.elapsed();
        drop(p);
        let c = t.elapsed();
        println!("spawn {:?} handshake {:?} drop {:?}", a, b - a, c - b);
    }
}
#[allow(dead_code)]
fn probe_dirs(l: &Launcher) {
    for _ in 0..std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
    {
        let t = Instant::now();
        let d = l.make_scratch_dir().unwrap();
        let a = t.elapsed();
        std::fs::remove_dir_all(&d).unwrap();
        println!("mkdir {:?} rm {:?}", a, t.elapsed() - a);
    }
    let t = Instant::now();
    for _ in 0..5 {
        std::process::Command::new("/usr/lib/postgresql/15/bin/postgres")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
    }
    println!("exec floor {:?}", t.elapsed() / 5);
}
