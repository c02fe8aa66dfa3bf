use walredo::{Config, Redoer};

#[test]
fn ping() {
    let _ = env_logger::builder().is_test(true).try_init();
    let cfg = Config {
        extension_path: Some(
            concat!(env!("CARGO_MANIFEST_DIR"), "/pg_walredo/pg_walredo.so").into(),
        ),
        ..Config::default()
    };
    let mut r = Redoer::new(&cfg).unwrap();
    r.ping().unwrap();
    r.ping().unwrap();
    let pid = r.pid().unwrap();
    let tail = r.shutdown();
    assert_eq!(tail, "");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
