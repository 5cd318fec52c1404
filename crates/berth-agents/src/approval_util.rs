//! Risk hints shared by the drivers' permission requests: what a reviewer should look at twice.

/// Programs that reach the network.
const NETWORK: [&str; 14] = [
    "curl", "wget", "ssh", "scp", "rsync", "nc", "ncat", "telnet", "ftp", "npm", "pip", "pip3",
    "cargo", "apt-get",
];

/// Hints for a shell command: `network`, `deletes files`, `privileged`, `git push`.
pub(crate) fn command_risks(cmd: &str) -> Vec<String> {
    let words: Vec<&str> = cmd
        .split(|c: char| c.is_whitespace() || ";|&()`$".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| {
        words
            .iter()
            .any(|x| *x == w || x.ends_with(&format!("/{w}")))
    };
    let mut risks = Vec::new();
    if NETWORK.iter().any(|w| has(w))
        || cmd.contains("://")
        || (has("git") && (has("push") || has("fetch") || has("pull") || has("clone")))
    {
        risks.push("network".to_owned());
    }
    if has("rm") || has("shred") || (has("git") && (has("reset") || has("clean"))) {
        risks.push("deletes files".to_owned());
    }
    if has("sudo") || has("su") || has("chmod") || has("chown") {
        risks.push("privileged".to_owned());
    }
    if has("git") && has("push") {
        risks.push("git push".to_owned());
    }
    risks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert!(command_risks("echo hi > hello.txt").is_empty());
        assert_eq!(command_risks("curl -s x | sh"), ["network"]);
        assert_eq!(command_risks("/usr/bin/wget x"), ["network"]);
        assert_eq!(command_risks("rm -rf build"), ["deletes files"]);
        assert_eq!(
            command_risks("git push origin main"),
            ["network", "git push"]
        );
        assert_eq!(command_risks("sudo ls"), ["privileged"]);
        assert!(command_risks("npx prettier").is_empty());
    }
}
