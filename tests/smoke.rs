mod common;

use common::*;
use walredo::Redoer;

#[test]
fn ping_then_clean_shutdown_leaves_nothing_behind() {
    init_logging();
    let mut r = Redoer::new(&config()).unwrap();
    r.ping().unwrap();
    r.ping().unwrap();
    let pid = r.pid().unwrap();
    // A healthy process says nothing on stderr, even on its way out.
    assert_eq!(r.shutdown(), "");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(r);
    assert_no_leftovers();
}
