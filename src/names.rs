//! Naming rules: one place that says what a user may call a host, a role, a
//! step, a workload, a mode, a suite or an environment variable, and what a
//! host's address, user, jump host and ssh option keys may hold.
//!
//! These names end up in paths (`runs/<id>/hosts/<host>/`,
//! `logs/<step>@<host>.out`), in run ids, on ssh's command line and in the
//! remote shell. A name that is `..`, starts with `-` or holds a shell
//! metacharacter would break one of them, so it is refused when the suite is
//! validated, with the rule in the message.

/// What a name names; each kind has its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `[A-Za-z0-9][A-Za-z0-9._-]*`: a folder under `hosts/` and part of
    /// every step id.
    Host,
    /// Like a host name: a role and a host name are written in the same
    /// `on:` lists.
    Role,
    /// `[A-Za-z0-9][A-Za-z0-9_-]*`: part of log file names.
    Step,
    /// `[A-Za-z0-9][A-Za-z0-9_-]*`: the first part of every run id.
    Workload,
    /// `[A-Za-z0-9][A-Za-z0-9_-]*`: the second part of every run id.
    Mode,
    /// `[A-Za-z0-9][A-Za-z0-9_-]*`: part of the artifact id.
    Suite,
    /// `[A-Za-z0-9][A-Za-z0-9_-]*`: a column of `summary.csv`.
    Metric,
    /// `[A-Za-z_][A-Za-z0-9_]*`: what a POSIX shell accepts in `export`.
    EnvVar,
}

impl NameKind {
    /// The word used in messages: "host name", "env key".
    pub fn what(self) -> &'static str {
        match self {
            NameKind::Host => "host name",
            NameKind::Role => "role",
            NameKind::Step => "step name",
            NameKind::Workload => "workload name",
            NameKind::Mode => "mode name",
            NameKind::Suite => "suite name",
            NameKind::Metric => "metric name",
            NameKind::EnvVar => "environment variable name",
        }
    }

    /// The rule, as the help line of an error says it.
    pub fn rule(self) -> &'static str {
        match self {
            NameKind::Host | NameKind::Role => {
                "use letters, digits, `.`, `_` and `-`, starting with a letter or digit"
            }
            NameKind::EnvVar => {
                "use letters, digits and `_`, not starting with a digit (as a shell variable)"
            }
            _ => "use letters, digits, `_` and `-`, starting with a letter or digit",
        }
    }

    /// Whether `s` is a valid name of this kind.
    pub fn accepts(self, s: &str) -> bool {
        let mut chars = s.chars();
        let Some(first) = chars.next() else {
            return false;
        };
        match self {
            NameKind::EnvVar => {
                (first.is_ascii_alphabetic() || first == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            NameKind::Host | NameKind::Role => {
                first.is_ascii_alphanumeric()
                    && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            }
            _ => {
                first.is_ascii_alphanumeric()
                    && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            }
        }
    }

    /// `Err(message, help)` when `s` is not a valid name of this kind.
    pub fn check(self, s: &str) -> Result<(), (String, String)> {
        if self.accepts(s) {
            Ok(())
        } else {
            Err((
                format!("invalid {} `{}`", self.what(), escape(s)),
                format!("{}s {}", self.what(), self.rule()),
            ))
        }
    }
}

/// A host field that reaches ssh's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostField {
    /// The destination argument: a host name, an IPv4 or IPv6 address.
    Address,
    /// `-l USER`.
    User,
    /// `-J [user@]host[:port][,…]`.
    Jump,
    /// The key of `-o Key=Value`.
    SshOptionKey,
}

impl HostField {
    pub fn what(self) -> &'static str {
        match self {
            HostField::Address => "address",
            HostField::User => "user",
            HostField::Jump => "jump",
            HostField::SshOptionKey => "ssh option",
        }
    }

    fn allowed(self, c: char) -> bool {
        match self {
            HostField::Address => {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%' | '[' | ']')
            }
            HostField::User => c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '$'),
            HostField::Jump => {
                c.is_ascii_alphanumeric()
                    || matches!(c, '.' | '-' | '_' | ':' | '%' | '[' | ']' | '@' | ',' | '/')
            }
            HostField::SshOptionKey => c.is_ascii_alphanumeric(),
        }
    }

    /// `Err(message, help)` when `s` could be read by ssh as something else
    /// than this field: an option (a leading `-`), or several words.
    pub fn check(self, s: &str) -> Result<(), (String, String)> {
        let what = self.what();
        if s.is_empty() {
            return Err((
                format!("empty {what}"),
                format!("give the {what} or remove the field"),
            ));
        }
        if s.starts_with('-') {
            return Err((
                format!("{what} `{}` starts with `-`", escape(s)),
                "ssh would read it as an option; a value here cannot start with `-`".into(),
            ));
        }
        if let Some(c) = s.chars().find(|&c| !self.allowed(c)) {
            let help = match self {
                HostField::SshOptionKey => {
                    "an ssh option is a keyword such as `StrictHostKeyChecking` (letters and digits)"
                }
                HostField::User => {
                    "a user name uses letters, digits, `.`, `_`, `-` (and a final `$`)"
                }
                HostField::Address => {
                    "an address is a host name, an IPv4 or an IPv6 address (letters, digits, `.`, `-`, `_`, `:`, `%`, `[`, `]`)"
                }
                HostField::Jump => "a jump host is `[user@]host[:port]`, several separated by `,`",
            };
            return Err((
                format!("{what} `{}` contains {}", escape(s), describe(c)),
                help.into(),
            ));
        }
        Ok(())
    }
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        '\n' => "a line break".into(),
        c if c.is_control() => format!("the control character U+{:04X}", u32::from(c)),
        c => format!("`{c}`"),
    }
}

/// A name as it can be shown in a one-line message.
fn escape(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for ok in ["h1", "node-1.cluster", "a_b", "1"] {
            assert!(NameKind::Host.accepts(ok), "{ok}");
        }
        for bad in ["", ".", "..", "-x", "_x", "a/b", "a b", "a;b", "é", "a@b"] {
            assert!(!NameKind::Host.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn step_names_have_no_dots() {
        assert!(NameKind::Step.accepts("worker-1_a"));
        assert!(!NameKind::Step.accepts("a.b"));
        assert!(!NameKind::Step.accepts("-a"));
    }

    #[test]
    fn env_keys_are_shell_variables() {
        for ok in ["A", "_a", "PATH_2"] {
            assert!(NameKind::EnvVar.accepts(ok), "{ok}");
        }
        for bad in ["", "1A", "A;touch x;B", "A-B", "A B", "A=B"] {
            assert!(!NameKind::EnvVar.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn ssh_fields_never_start_with_a_dash() {
        assert!(HostField::Address.check("-oProxyCommand=x").is_err());
        assert!(HostField::Address.check("10.0.0.1").is_ok());
        assert!(HostField::Address.check("fe80::1%eth0").is_ok());
        assert!(HostField::Address.check("a b").is_err());
        assert!(HostField::User.check("-x").is_err());
        assert!(HostField::User.check("jc").is_ok());
        assert!(HostField::Jump.check("jc@ares:2222,b").is_ok());
        assert!(HostField::Jump.check("-oProxyCommand=x").is_err());
        assert!(
            HostField::SshOptionKey
                .check("StrictHostKeyChecking")
                .is_ok()
        );
        assert!(HostField::SshOptionKey.check("-x").is_err());
        assert!(HostField::SshOptionKey.check("A B").is_err());
    }

    #[test]
    fn messages_show_control_characters_escaped() {
        let (msg, _) = NameKind::Host.check("a\nb").expect_err("invalid");
        assert_eq!(msg, "invalid host name `a\\nb`");
    }
}
