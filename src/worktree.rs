//! Git worktrees for isolated jobs: a job with `isolation: "worktree"` runs in a worktree of its
//! own, on a branch of its own, so jobs on one repository do not trample each other's files.
//!
//! Everything here runs `git` as a child process (no git library: the user's git, with its
//! config and hooks, is the one that must agree). Nothing here knows about jobs beyond the names
//! it is given.

use std::path::{Path, PathBuf};

use tokio::process::Command;
use tokio::sync::Mutex;

use crate::model::{Changes, Worktree};

/// How many changed paths a [`Changes`] lists by name.
const PATHS_LISTED: usize = 50;

/// Held while git adds, removes or prunes a worktree, or deletes a branch. Git does not guard
/// these against each other: one `git worktree add` lists the repository's worktrees while
/// another is half made, and fails with "failed to read .git/worktrees/…/commondir" (git
/// 2.47, two `job_start`s at once on a loaded machine). They take milliseconds, so one lock for
/// every repository costs nothing worth a lock per repository.
static ADMINISTRATION: Mutex<()> = Mutex::const_new(());

/// Runs `git args` in `dir`; its stdout, or what went wrong in one line.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    git_with_index(dir, None, args).await
}

/// [`git`] with `index` (when given) as the index instead of the worktree's own.
async fn git_with_index(dir: &Path, index: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(args).kill_on_drop(true);
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let output = command
        .output()
        .await
        .map_err(|e| format!("could not run git: {e}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("`git {}` failed: {}", args.join(" "), why(&stderr)))
}

/// The line of git's `stderr` that says why it failed: its first `fatal:` or `error:` line, as
/// git may first say what it was doing ("Preparing worktree …"); else its last line.
fn why(stderr: &str) -> &str {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines
        .clone()
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or_else(|| lines.next_back())
        .unwrap_or("no message")
}

/// Creates a worktree for `job` under `root`, on the new branch `branch`, from `base_ref`
/// (default: HEAD) of the repository `cwd` is in. Its `cwd` is the directory in it that matches
/// `cwd` (which may be a subdirectory of the repository).
pub async fn create(
    cwd: &Path,
    root: &Path,
    job: &str,
    branch: &str,
    base_ref: Option<&str>,
) -> Result<Worktree, String> {
    let top = git(cwd, &["rev-parse", "--show-toplevel"])
        .await
        .map_err(|_| {
            format!(
                "cwd {} is not in a git repository, so it cannot get a worktree; pass a cwd in \
                 a repository, or leave isolation out",
                cwd.display()
            )
        })?;
    let top = PathBuf::from(top);
    let inside = cwd
        .canonicalize()
        .ok()
        .and_then(|real| {
            let top = top.canonicalize().ok()?;
            real.strip_prefix(&top).ok().map(Path::to_path_buf)
        })
        .unwrap_or_default();
    let base_ref = base_ref.unwrap_or("HEAD");
    // A ref is never an option of git's.
    if base_ref.starts_with('-') {
        return Err(format!(
            "base_ref {base_ref:?} starts with '-'; pass a branch, tag or commit"
        ));
    }
    let base = git(
        &top,
        &["rev-parse", "--verify", &format!("{base_ref}^{{commit}}")],
    )
    .await
    .map_err(|_| {
        format!(
            "base_ref {base_ref:?} names no commit in {}; pass a branch, tag or commit \
                 (a repository needs one commit before it can have worktrees)",
            top.display()
        )
    })?;
    std::fs::create_dir_all(root)
        .map_err(|e| format!("could not create {}: {e}", root.display()))?;
    let path = root.join(job);
    let path_text = path.to_string_lossy().into_owned();
    {
        let _only = ADMINISTRATION.lock().await;
        git(&top, &["worktree", "add", "-b", branch, &path_text, &base]).await?;
    }
    let worktree = Worktree {
        cwd: path.join(inside).to_string_lossy().into_owned(),
        path: path_text,
        branch: branch.to_owned(),
        base,
        repo: top.to_string_lossy().into_owned(),
        removed: false,
        branch_deleted: false,
    };
    Ok(worktree)
}

/// What the worktree changed against its base: commits on its branch, staged, unstaged and new
/// files alike, counted as git counts them (a binary file's lines not at all).
pub async fn changes(worktree: &Worktree) -> Result<Changes, String> {
    let dir = Path::new(&worktree.path);
    // New files are counted by git too, as intended to be added (`git add -N`) in a copy of the
    // worktree's index: the job's own index is left as the job left it.
    let index = dir.join(git(dir, &["rev-parse", "--git-path", "index"]).await?);
    let scratch = index.with_file_name("codex-async-mcp-changes-index");
    tokio::fs::copy(&index, &scratch)
        .await
        .map_err(|e| format!("could not copy the worktree's index: {e}"))?;
    let counted = async {
        git_with_index(dir, Some(&scratch), &["add", "--intent-to-add", "--", "."]).await?;
        let base = worktree.base.as_str();
        git_with_index(
            dir,
            Some(&scratch),
            &["diff", "--numstat", "-z", base, "--"],
        )
        .await
    }
    .await;
    let _ = tokio::fs::remove_file(&scratch).await;
    let numstat = counted?;
    let mut changes = Changes {
        branch: worktree.branch.clone(),
        ..Changes::default()
    };
    let mut fields = numstat.split('\0').filter(|f| !f.is_empty());
    while let Some(counts) = fields.next() {
        let mut parts = counts.splitn(3, '\t');
        let (added, deleted, path) = (parts.next(), parts.next(), parts.next());
        // A rename has an empty path here and its two paths in the next fields.
        let path = match path {
            Some(path) if !path.is_empty() => path.to_owned(),
            _ => {
                fields.next();
                fields.next().unwrap_or_default().to_owned()
            }
        };
        // A binary file's counts are `-`.
        changes.insertions += added.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        changes.deletions += deleted.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        changes.files += 1;
        if changes.paths.len() < PATHS_LISTED {
            changes.paths.push(path);
        }
    }
    Ok(changes)
}

/// Removes the worktree; refuses, saying what would be lost, when it holds changes that are not
/// committed, unless `force`. Its branch stays.
pub async fn remove(worktree: &Worktree, force: bool) -> Result<(), String> {
    let repo = Path::new(&worktree.repo);
    let dir = Path::new(&worktree.path);
    if dir.exists() {
        if !force {
            let dirty = git(dir, &["status", "--porcelain"]).await?;
            let files = dirty.lines().count();
            if files > 0 {
                return Err(format!(
                    "worktree {} has uncommitted changes in {files} file(s) that removing it \
                     would lose; commit them on branch {}, or pass force: true to discard them",
                    worktree.path, worktree.branch
                ));
            }
        }
        let mut args = vec!["worktree", "remove"];
        if force {
            args.push("--force");
        }
        args.push(&worktree.path);
        let _only = ADMINISTRATION.lock().await;
        git(repo, &args).await?;
    } else {
        // Removed by hand: forget its administrative files.
        let _only = ADMINISTRATION.lock().await;
        git(repo, &["worktree", "prune"]).await?;
    }
    Ok(())
}

/// Deletes the worktree's branch, merged or not.
pub async fn delete_branch(worktree: &Worktree) -> Result<(), String> {
    let repo = Path::new(&worktree.repo);
    // Git reads every worktree's HEAD to refuse deleting a branch one has checked out.
    let _only = ADMINISTRATION.lock().await;
    git(repo, &["branch", "-D", &worktree.branch])
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::why;

    #[test]
    fn a_failure_is_told_by_gits_fatal_line_not_by_what_it_was_doing() {
        let stderr = "Preparing worktree (new branch 'b')\n\
                      fatal: failed to read .git/worktrees/w/commondir: Success\n";
        assert_eq!(
            why(stderr),
            "fatal: failed to read .git/worktrees/w/commondir: Success"
        );
    }

    #[test]
    fn a_failure_without_a_fatal_line_is_told_by_gits_last_line() {
        assert_eq!(why("hint: one\n  it broke  \n\n"), "it broke");
        assert_eq!(why(""), "no message");
    }
}
