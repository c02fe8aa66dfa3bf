use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("walredo-restore-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: look at its state.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The process whose pid the command wrote to `pidfile` is gone.
fn assert_killed(pidfile: &Path) {
    let pid: i32 = fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(pid), "the command's child {pid} outlived it");
}

#[test]
fn fetches_into_the_cache_once_and_says_when_the_archive_lacks_a_file() {
    let dir = scratch("fetch");
    let archive = dir.join("archive");
    fs::create_dir_all(&archive).unwrap();
    fs::write(archive.join("000000010000000000000003"), b"segment three").unwrap();
    let runs = dir.join("runs");
    let cmd = format!(
        "echo %f >> {runs} && cp {}/%f %p",
        archive.display(),
        runs = runs.display()
    );
    let r = RestoreCommand::new(&cmd, &dir.join("cache"), Duration::from_secs(10), 8).unwrap();
    let got = r.fetch("000000010000000000000003").unwrap().unwrap();
    assert_eq!(fs::read(&got).unwrap(), b"segment three");
    assert_eq!(got.parent().unwrap(), r.cache_dir());
    // Cached: the command does not run again.
    assert_eq!(r.fetch("000000010000000000000003").unwrap(), Some(got));
    assert_eq!(fs::read_to_string(&runs).unwrap().lines().count(), 1);
    // Not in the archive: cp fails, None; nothing left in the cache.
    assert_eq!(r.fetch("000000010000000000000004").unwrap(), None);
    let left: Vec<_> = fs::read_dir(r.cache_dir()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // The cache directory is private.
    let mode = fs::metadata(r.cache_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn placeholders_expand_as_postgresql_expands_them() {
    let dir = scratch("placeholders");
    let r = RestoreCommand::new("x %f %r %p 100%% %z %", &dir, Duration::from_secs(1), 1).unwrap();
    assert_eq!(
        r.command_line("F", Path::new("/p/q")),
        "x F F /p/q 100% %z %"
    );
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(r.fetch(bad).is_err(), "{bad:?}");
    }
    assert!(RestoreCommand::new("  ", &dir, Duration::from_secs(1), 1).is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_signal_is_an_error_and_a_hang_is_killed_with_its_group() {
    let dir = scratch("hang");
    let r = RestoreCommand::new("kill -9 $$", &dir.join("c1"), Duration::from_secs(10), 1).unwrap();
    let e = r.fetch("000000010000000000000001").unwrap_err();
    assert!(e.to_string().contains("terminated by signal 9"), "{e}");

    let pidfile = dir.join("pid");
    let cmd = format!(
        "sleep 30 & echo $! > {}; echo waiting >&2; wait",
        pidfile.display()
    );
    let r = RestoreCommand::new(&cmd, &dir.join("c2"), Duration::from_millis(300), 1).unwrap();
    let started = Instant::now();
    let e = r.fetch("000000010000000000000001").unwrap_err();
    assert!(
        e.to_string().contains("did not finish within 300 ms"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_killed(&pidfile);

    // A success that leaves a child behind: the child is killed too.
    let cmd = format!("sleep 30 & echo $! > {}; echo x > %p", pidfile.display());
    let r = RestoreCommand::new(&cmd, &dir.join("c3"), Duration::from_secs(10), 1).unwrap();
    assert!(r.fetch("000000010000000000000001").unwrap().is_some());
    assert_killed(&pidfile);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cache_keeps_the_newest_files_only() {
    let dir = scratch("limit");
    let r = RestoreCommand::new(
        "echo %f > %p",
        &dir.join("cache"),
        Duration::from_secs(10),
        2,
    )
    .unwrap();
    for n in 1..=3 {
        r.fetch(&format!("00000001000000000000000{n}"))
            .unwrap()
            .unwrap();
    }
    let mut left: Vec<String> = fs::read_dir(r.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["000000010000000000000002", "000000010000000000000003"]
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn much_output_neither_blocks_nor_is_kept_whole() {
    let dir = scratch("output");
    let r = RestoreCommand::new(
        "head -c 1000000 /dev/zero | tr '\\0' x; head -c 1000000 /dev/zero >&2; kill -9 $$",
        &dir,
        Duration::from_secs(10),
        1,
    )
    .unwrap();
    let e = r.fetch("000000010000000000000001").unwrap_err();
    assert!(
        e.to_string().len() < 2 * OUTPUT_KEPT,
        "{} bytes",
        e.to_string().len()
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupt_kills_the_command() {
    let dir = scratch("interrupt");
    let r = RestoreCommand::new("sleep 30", &dir, Duration::from_secs(60), 1).unwrap();
    let started = Instant::now();
    let mut asked = 0;
    let e = r
        .fetch_interruptible("000000010000000000000001", &mut || {
            asked += 1;
            started.elapsed() > Duration::from_millis(100)
        })
        .unwrap_err();
    assert!(matches!(e, RestoreError::Cancelled), "{e}");
    assert!(asked > 1 && started.elapsed() < Duration::from_secs(5));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_process_that_leaves_the_group_does_not_hold_the_fetch() {
    let dir = scratch("setsid");
    // setsid: a process of another session, holding the output pipe open.
    let r = RestoreCommand::new(
        "setsid sleep 5 & echo x > %p",
        &dir.join("cache"),
        Duration::from_secs(10),
        1,
    )
    .unwrap();
    let started = Instant::now();
    assert!(r.fetch("000000010000000000000001").unwrap().is_some());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    fs::remove_dir_all(&dir).unwrap();
}
