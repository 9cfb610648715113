//! The test logger: env_logger in test mode, installed once per process.

use std::sync::Once;

/// Installs env_logger once (`is_test(true)`, so output is captured per
/// test); the level comes from `RUST_LOG`, default `warn`.
pub fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .is_test(true)
            .try_init();
    });
}
