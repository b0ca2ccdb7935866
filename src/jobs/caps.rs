//! Policy caps: what an operator lets clients ask of Codex on a shared or remote server (the
//! sandbox, the approval policy, the model, the reasoning effort, the directories jobs run in).
//!
//! A job's settings reach Codex by their own arguments and also through `config` overrides (and
//! a `profile`, which can set any of them), so a cap checks both: a capped key in `config` must
//! hold an allowed value, and neither a profile nor keys that would widen a capped setting
//! (`sandbox_workspace_write`'s writable roots, another model provider) are taken while a cap
//! could be dodged with them.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::model::{Effort, ThreadOptions};

/// What clients may ask for; an empty list (or `None`) caps nothing.
#[derive(Clone, Debug, Default)]
pub struct Caps {
    /// `--allowed-sandbox`.
    pub sandboxes: Vec<String>,
    /// `--allowed-approval-policy`.
    pub approval_policies: Vec<String>,
    /// `--allowed-model`.
    pub models: Vec<String>,
    /// `--max-effort`.
    pub max_effort: Option<Effort>,
    /// `--allowed-cwd-root`, each as the real path it names.
    pub cwd_roots: Vec<PathBuf>,
}

impl Caps {
    /// The caps in force, one line each, as `doctor` shows them.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut list = |flag: &str, values: &[String]| {
            if !values.is_empty() {
                lines.push(format!("--{flag}: {}", values.join(", ")));
            }
        };
        list("allowed-sandbox", &self.sandboxes);
        list("allowed-approval-policy", &self.approval_policies);
        list("allowed-model", &self.models);
        let roots: Vec<String> = self
            .cwd_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        list("allowed-cwd-root", &roots);
        if let Some(effort) = self.max_effort {
            lines.push(format!("--max-effort: {}", effort.as_str()));
        }
        lines
    }

    /// Whether a cap limits what `config` or a profile could also set.
    fn limits_settings(&self) -> bool {
        !self.sandboxes.is_empty()
            || !self.approval_policies.is_empty()
            || !self.models.is_empty()
            || self.max_effort.is_some()
    }

    /// Refuses options outside the caps, naming the cap.
    pub(super) fn check(&self, options: &ThreadOptions) -> Result<(), String> {
        let empty = Map::new();
        let config = options.config.as_ref().unwrap_or(&empty);
        let from_config = |key: &str| config.get(key).map(config_text);
        let sandboxes = [options.sandbox.clone(), from_config("sandbox_mode")];
        allowed("sandbox", &sandboxes, &self.sandboxes, "allowed-sandbox")?;
        let policies = [
            options.approval_policy.clone(),
            from_config("approval_policy"),
        ];
        allowed(
            "approval_policy",
            &policies,
            &self.approval_policies,
            "allowed-approval-policy",
        )?;
        let models = [options.model.clone(), from_config("model")];
        allowed("model", &models, &self.models, "allowed-model")?;
        if let Some(most) = self.max_effort {
            let efforts = [
                options.effort.map(|e| e.as_str().to_owned()),
                from_config("model_reasoning_effort"),
            ];
            for effort in efforts.into_iter().flatten() {
                let within = serde_json::from_value::<Effort>(Value::String(effort.clone()))
                    .is_ok_and(|e| e <= most);
                if !within {
                    return Err(format!(
                        "effort {effort:?} is above what this server allows (--max-effort {})",
                        most.as_str()
                    ));
                }
            }
        }
        if self.limits_settings() {
            if let Some(profile) = &options.profile {
                return Err(format!(
                    "profile {profile:?} is not taken on this server: a profile can set what its \
                     caps limit ({}). Pass the settings themselves",
                    self.describe().join("; ")
                ));
            }
            self.refuse_widening_keys(config)?;
        }
        if !self.cwd_roots.is_empty() {
            self.check_cwd(Path::new(&options.cwd))?;
        }
        Ok(())
    }

    /// Refuses `config` keys that would let a job around a cap: a profile, a sandbox's writable
    /// roots when full access is not allowed, another model provider when models are capped.
    fn refuse_widening_keys(&self, config: &Map<String, Value>) -> Result<(), String> {
        let mut refused = vec!["profile", "profiles"];
        let full_access = "danger-full-access";
        if !self.sandboxes.is_empty() && !self.sandboxes.iter().any(|s| s == full_access) {
            refused.push("sandbox_workspace_write");
        }
        if !self.models.is_empty() {
            refused.extend(["model_provider", "model_providers"]);
        }
        let hit = config.keys().find(|key| {
            refused
                .iter()
                .any(|r| *key == r || key.strip_prefix(r).is_some_and(|k| k.starts_with('.')))
        });
        match hit {
            Some(key) => Err(format!(
                "config key {key:?} is not taken on this server: it could get around its caps \
                 ({})",
                self.describe().join("; ")
            )),
            None => Ok(()),
        }
    }

    fn check_cwd(&self, cwd: &Path) -> Result<(), String> {
        let real = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
        if self.cwd_roots.iter().any(|root| real.starts_with(root)) {
            return Ok(());
        }
        let roots: Vec<String> = self
            .cwd_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        Err(format!(
            "cwd {} is outside the directories this server lets jobs run in \
             (--allowed-cwd-root: {}); pass a cwd under one of them",
            cwd.display(),
            roots.join(", ")
        ))
    }
}

/// A `config` value as the text a cap compares: a string as it is, anything else as JSON.
fn config_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Refuses any of `asked` not in `allowed` (when that caps anything).
fn allowed(
    what: &str,
    asked: &[Option<String>],
    allowed: &[String],
    flag: &str,
) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    match asked.iter().flatten().find(|a| !allowed.contains(a)) {
        Some(value) => Err(format!(
            "{what} {value:?} is not allowed on this server (--{flag}: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caps() -> Caps {
        Caps {
            sandboxes: vec!["read-only".into(), "workspace-write".into()],
            approval_policies: vec!["never".into()],
            models: vec!["gpt-5.5".into()],
            max_effort: Some(Effort::Medium),
            cwd_roots: Vec::new(),
        }
    }

    fn with_config(config: Value) -> ThreadOptions {
        ThreadOptions {
            config: config.as_object().cloned(),
            ..ThreadOptions::default()
        }
    }

    #[test]
    fn no_caps_allow_anything() {
        let options = ThreadOptions {
            sandbox: Some("danger-full-access".into()),
            profile: Some("any".into()),
            ..with_config(json!({"profile": "x"}))
        };
        assert_eq!(Caps::default().check(&options), Ok(()));
    }

    #[test]
    fn a_capped_setting_in_config_is_checked_like_the_argument() {
        let caps = caps();
        let e = caps
            .check(&with_config(json!({"sandbox_mode": "danger-full-access"})))
            .unwrap_err();
        assert!(
            e.starts_with(r#"sandbox "danger-full-access" is not allowed"#),
            "{e}"
        );
        let e = caps
            .check(&with_config(json!({"model_reasoning_effort": "xhigh"})))
            .unwrap_err();
        assert!(e.contains("--max-effort medium"), "{e}");
        let e = caps
            .check(&with_config(json!({"approval_policy": {"granular": {}}})))
            .unwrap_err();
        assert!(e.contains("--allowed-approval-policy: never"), "{e}");
        assert_eq!(
            caps.check(&with_config(json!({"model": "gpt-5.5"}))),
            Ok(())
        );
    }

    #[test]
    fn keys_that_get_around_a_cap_are_refused() {
        let caps = caps();
        for key in [
            "profile",
            "profiles.x.model",
            "sandbox_workspace_write.writable_roots",
            "model_provider",
        ] {
            let e = caps.check(&with_config(json!({key: "x"}))).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        // A key that merely starts the same is not one of them.
        assert_eq!(caps.check(&with_config(json!({"profile_x": 1}))), Ok(()));
    }

    #[test]
    fn a_cwd_must_be_under_an_allowed_root_after_links_are_resolved() {
        let root = std::env::temp_dir().join(format!("caps-root-{}", std::process::id()));
        let inside = root.join("repo");
        std::fs::create_dir_all(&inside).unwrap();
        let caps = Caps {
            cwd_roots: vec![root.canonicalize().unwrap()],
            ..Caps::default()
        };
        let at = |cwd: &Path| ThreadOptions {
            cwd: cwd.to_string_lossy().into_owned(),
            ..ThreadOptions::default()
        };
        assert_eq!(caps.check(&at(&inside)), Ok(()));
        let e = caps.check(&at(&inside.join("../.."))).unwrap_err();
        assert!(e.contains("--allowed-cwd-root"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
