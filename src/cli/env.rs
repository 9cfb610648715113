//! Environment variables merged under the flags, once, before anything is built.

use std::path::PathBuf;
use std::str::FromStr;

use piratebay_sync::etcd;

use super::CliError;

/// The flag if given, else the environment variable `var` if set and non-empty.
pub fn flag_or_env(flag: Option<String>, var: &str) -> Option<String> {
    flag.or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
}

/// How to name a setting in a message: the flag if it was given, else the
/// variable it came from.
pub fn named<T>(flag: &Option<T>, name: &'static str, var: &'static str) -> &'static str {
    if flag.is_some() {
        name
    } else {
        var
    }
}

/// `--max-rate` or `PIRATEBAY_MAX_RATE`, parsed.
pub fn max_rate(flag: Option<String>) -> Result<Option<u64>, CliError> {
    let name = named(&flag, "--max-rate", "PIRATEBAY_MAX_RATE");
    flag_or_env(flag, "PIRATEBAY_MAX_RATE")
        .map(|r| piratebay_sync::parse_rate(&r).map_err(|e| format!("{name}: {e}").into()))
        .transpose()
}

/// Like [`flag_or_env`] but parsed, with an error naming the variable on bad input.
pub fn parsed_flag_or_env<T>(flag: Option<T>, var: &str) -> Result<Option<T>, CliError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    if flag.is_some() {
        return Ok(flag);
    }
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map(Some)
            .map_err(|e| format!("invalid {var}={v:?}: {e}").into()),
        _ => Ok(None),
    }
}

/// A command's args struct with the flags of every command that talks to
/// etcd spliced in where it says `@etcd_flags`: `--etcd`, `--namespace`,
/// `--etcd-user`, `--etcd-password`, `--etcd-ca`, each with its
/// `PIRATEBAY_*` variable in its help. argh has no flattened option groups
/// (a nested `FromArgs` struct can only be a subcommand), so the fields are
/// written once here and the `--help` order stays where each command puts
/// them. A field's type is a name with at most one argument (`bool`,
/// `Option<String>`): argh reads `bool`, `Option` and `Vec` from the tokens,
/// which a `ty` fragment would hide. [`etcd_opts!`] reads them back.
macro_rules! with_etcd_flags {
    (
        $(#[$($meta:tt)*])*
        pub struct $name:ident {
            $( $(#[$($b_attr:tt)*])* pub $b:ident : $b_ty:ident $(<$b_arg:ident>)? , )*
            @etcd_flags
            $( $(#[$($a_attr:tt)*])* pub $a:ident : $a_ty:ident $(<$a_arg:ident>)? , )*
        }
    ) => {
        $(#[$($meta)*])*
        pub struct $name {
            $( $(#[$($b_attr)*])* pub $b: $b_ty $(<$b_arg>)?, )*
            /// etcd endpoints, comma-separated (env PIRATEBAY_ETCD, default http://127.0.0.1:2379)
            #[argh(option)]
            pub etcd: Option<String>,
            /// key namespace (env PIRATEBAY_NAMESPACE, default piratebay)
            #[argh(option)]
            pub namespace: Option<String>,
            /// etcd user name (env PIRATEBAY_ETCD_USER)
            #[argh(option)]
            pub etcd_user: Option<String>,
            /// etcd password (env PIRATEBAY_ETCD_PASSWORD)
            #[argh(option)]
            pub etcd_password: Option<String>,
            /// PEM file of CA certificates for https endpoints (env PIRATEBAY_ETCD_CA)
            #[argh(option)]
            pub etcd_ca: Option<String>,
            $( $(#[$($a_attr)*])* pub $a: $a_ty $(<$a_arg>)?, )*
        }
    };
}
pub(crate) use with_etcd_flags;

/// The etcd options every command that talks to etcd accepts.
pub struct EtcdOpts {
    pub etcd: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ca: Option<String>,
}

/// The [`EtcdOpts`] of a command's args struct (its fields from
/// [`with_etcd_flags!`]).
macro_rules! etcd_opts {
    ($args:expr) => {
        $crate::cli::env::EtcdOpts {
            etcd: $args.etcd,
            user: $args.etcd_user,
            password: $args.etcd_password,
            ca: $args.etcd_ca,
        }
    };
}
pub(crate) use etcd_opts;

/// An etcd client from flags and `PIRATEBAY_ETCD*`.
pub fn etcd_client(o: EtcdOpts) -> Result<etcd::Client, CliError> {
    Ok(etcd::Client::new(etcd_config(o)?)?)
}

/// Builds the etcd client configuration from flags and `PIRATEBAY_ETCD*`.
pub fn etcd_config(o: EtcdOpts) -> Result<etcd::Config, CliError> {
    let mut cfg = etcd::Config::default();
    let etcd_name = named(&o.etcd, "--etcd", "PIRATEBAY_ETCD");
    let user_name = named(&o.user, "--etcd-user", "PIRATEBAY_ETCD_USER");
    if let Some(list) = flag_or_env(o.etcd, "PIRATEBAY_ETCD") {
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(normalize_endpoint)
            .collect();
        if endpoints.is_empty() {
            return Err(format!(
                "{etcd_name} is empty: give at least one URL such as http://127.0.0.1:2379"
            )
            .into());
        }
        cfg.endpoints = endpoints;
    }
    cfg.user = flag_or_env(o.user, "PIRATEBAY_ETCD_USER");
    cfg.password = flag_or_env(o.password, "PIRATEBAY_ETCD_PASSWORD");
    if cfg.user.is_some() && cfg.password.is_none() {
        return Err(
            format!("{user_name} needs --etcd-password (or PIRATEBAY_ETCD_PASSWORD)").into(),
        );
    }
    cfg.ca_file = flag_or_env(o.ca, "PIRATEBAY_ETCD_CA").map(PathBuf::from);
    Ok(cfg)
}

/// `host:port` becomes `http://host:port`; a trailing `/` is dropped.
fn normalize_endpoint(s: &str) -> String {
    let s = s.trim_end_matches('/');
    if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

/// The namespace from the flag or `PIRATEBAY_NAMESPACE`, default `piratebay`.
pub fn namespace(flag: Option<String>) -> String {
    flag_or_env(flag, "PIRATEBAY_NAMESPACE").unwrap_or_else(|| "piratebay".to_string())
}

/// The dataset directory from the flag or `PIRATEBAY_DATASET`, default `/tmp/dataset`.
pub fn dataset(flag: Option<String>) -> PathBuf {
    PathBuf::from(flag_or_env(flag, "PIRATEBAY_DATASET").unwrap_or_else(|| "/tmp/dataset".into()))
}

/// The state directory: the flag, `PIRATEBAY_STATE_DIR`, `$XDG_STATE_HOME/piratebay-sync`,
/// `$HOME/.local/state/piratebay-sync`, else `/tmp/piratebay-sync-state`.
pub fn state_dir(flag: Option<String>) -> PathBuf {
    if let Some(d) = flag_or_env(flag, "PIRATEBAY_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("piratebay-sync");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/piratebay-sync");
    }
    PathBuf::from("/tmp/piratebay-sync-state")
}
