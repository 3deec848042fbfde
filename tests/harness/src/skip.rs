//! Tests that cannot run here (no root, a tool or a filesystem feature missing) say so
//! and return; under CI (`CI=true`, set by `.ci/run`) the same condition fails the test
//! instead, so a CI machine that lost a tool cannot pass by skipping.

/// Whether this run is CI's: `CI=true` in the environment.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a skipped test, or panics with `reason` under CI.
///
/// # Panics
/// When [`in_ci`]: CI must run every test.
pub fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "{reason}: CI=true, so this test must run, not be skipped"
    );
    eprintln!("SKIPPED: {reason}");
}
