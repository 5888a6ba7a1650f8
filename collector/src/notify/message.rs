//! The bodies webhooks receive. Pure: a stored OOM (or a count of suppressed ones)
//! in, a JSON value out.
//!
//! Everything here that a guest or an agent wrote (VM name, process name) is hostile:
//! control characters become spaces, length is capped, and for chat formats the
//! markup is neutralised, so a process named `<!channel>` or `@here` pings nobody
//! and `<script>` is shown as text.
//!
//! The `json` format, one OOM:
//! ```json
//! {"type": "oom", "webhook": "ops", "oom_id": 42, "host": "pve1",
//!  "vm": {"uuid": "9a6c...", "name": "tor"}, "kind": "guest",
//!  "captured_at_ms": 1795672800000, "captured_at": "2026-11-26T06:00:00Z",
//!  "killed": {"pid": 1234, "comm": "java", "anon_rss_kb": 401234},
//!  "report_kind": "global", "report_verdict": "balloon",
//!  "correlation": {"verdict": "balloon", "balloon_held_kb": 262144,
//!                  "host_took": {"verdict": "host_took_memory", "mechanisms": ["balloon"],
//!                                "total_kib": 262144}},
//!  "links": {"api": "https://c/api/v1/ooms/42", "dashboard": "https://c/ooms/42"}}
//! ```
//! and after a rate-limited burst:
//! ```json
//! {"type": "suppressed", "webhook": "ops", "suppressed": 40,
//!  "by_verdict": {"balloon": 38, "unknown": 2}, "first_captured_ms": ..., "last_captured_ms": ...,
//!  "rate_limit": {"messages": 10, "window_secs": 60}, "links": {"dashboard": "https://c/ooms"}}
//! ```

use serde_json::{json, Value};

use ballast_model::CorrelationVerdict;

use crate::notify::config::WebhookFormat;
use crate::storage::outbox::{verdict_name, OomNotice, SuppressedSummary};

/// Longest guest- or agent-written text put in a message, in characters.
const MAX_TEXT_CHARS: usize = 120;

/// The rate limit a summary reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub messages: u32,
    pub window_secs: u64,
}

/// Control characters to spaces, trimmed, capped; the base every format starts from.
pub fn plain(text: &str) -> String {
    let text = text.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT_CHARS)
        .collect();
    if text.chars().count() > MAX_TEXT_CHARS {
        out.push('…');
    }
    out
}

/// Text for Slack mrkdwn inside a code span: `&<>` escaped as Slack requires (so
/// `<!channel>` and `<url|x>` are shown, not acted on), backticks cannot close the
/// span, and `@` is followed by a word joiner so no mention forms.
pub fn slack_text(text: &str) -> String {
    escaped(text, |c, out| out.push(if c == '`' { '\'' } else { c }))
}

/// Text for Mattermost Markdown: `&<>` as entities (its Slack compatibility would turn
/// `<!channel>` into a mention), Markdown punctuation backslash-escaped, `@` broken.
pub fn mattermost_text(text: &str) -> String {
    escaped(text, |c, out| {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '(' | ')' | '#' | '|' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    })
}

/// [`plain`] text with `&<>` as entities and `@` followed by a word joiner (what
/// Slack and Mattermost both need); every other character goes through `other`.
fn escaped(text: &str, other: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in plain(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => out.push_str("@\u{2060}"),
            c => other(c, &mut out),
        }
    }
    out
}

/// `2026-11-26T06:00:00Z`.
pub fn rfc3339(ms: i64) -> String {
    crate::reports::format::date_time(ms).replace(' ', "T") + "Z"
}

fn mib(kb: i64) -> String {
    format!("{} MiB", kb / 1024)
}

/// The API and dashboard links of an OOM.
pub fn links(public_url: &str, oom_id: i64) -> (String, String) {
    (
        format!("{public_url}/api/v1/ooms/{oom_id}"),
        format!("{public_url}/ooms/{oom_id}"),
    )
}

/// The body announcing one OOM.
pub fn oom_body(
    format: WebhookFormat,
    webhook: &str,
    notice: &OomNotice,
    public_url: &str,
) -> Value {
    let (api, dashboard) = links(public_url, notice.oom_id);
    let took = host_took(notice);
    match format {
        WebhookFormat::Json => json!({
            "type": "oom",
            "webhook": webhook,
            "oom_id": notice.oom_id,
            "host": plain(&notice.host),
            "vm": {"uuid": plain(&notice.vm_uuid), "name": plain(&notice.vm_name)},
            "kind": notice.kind,
            "captured_at_ms": notice.captured_at_ms,
            "captured_at": rfc3339(notice.captured_at_ms),
            "killed": notice.killed_comm.as_ref().map(|comm| json!({
                "pid": notice.killed_pid,
                "comm": plain(comm),
                "anon_rss_kb": notice.killed_anon_rss_kb,
            })),
            "report_kind": notice.report_kind,
            "report_verdict": notice.report_verdict,
            "correlation": {
                "verdict": notice.corr_verdict,
                "balloon_held_kb": notice.balloon_held_kb,
                "host_took": {
                    "verdict": took.verdict,
                    "mechanisms": took.mechanisms,
                    "total_kib": took.total_kib,
                },
            },
            "links": {"api": api, "dashboard": dashboard},
        }),
        WebhookFormat::Slack => json!({"text": chat_text(notice, &api, &dashboard, true)}),
        WebhookFormat::Mattermost => json!({"text": chat_text(notice, &api, &dashboard, false)}),
    }
}

/// The host's side over every mechanism (an older row's: the balloon's part).
fn host_took(notice: &OomNotice) -> crate::correlation::outcome::HostTook {
    crate::records::host_took_of(
        &notice.correlation_json,
        notice.corr_verdict,
        notice.balloon_held_kb.and_then(|kb| u64::try_from(kb).ok()),
    )
}

fn chat_text(notice: &OomNotice, api: &str, dashboard: &str, slack: bool) -> String {
    let quote = |text: &str| {
        if slack {
            format!("`{}`", slack_text(text))
        } else {
            format!("**{}**", mattermost_text(text))
        }
    };
    let link = |url: &str, label: &str| chat_link(slack, url, label);
    let verdict = match notice.corr_verdict {
        CorrelationVerdict::Balloon => "caused by the balloon",
        CorrelationVerdict::BalloonContributed => "the balloon contributed",
        CorrelationVerdict::NotBalloon => "not the balloon",
        CorrelationVerdict::Unknown => "balloon role unknown",
    };
    let mut text = format!(
        ":boom: *OOM* ({kind}) in VM {vm} on host {host}: {verdict}\n",
        kind = quote(notice.kind.as_str()),
        vm = quote(&notice.vm_name),
        host = quote(&notice.host),
    );
    match &notice.killed_comm {
        Some(comm) => {
            text.push_str(&format!("Killed {}", quote(comm)));
            if let Some(pid) = notice.killed_pid {
                text.push_str(&format!(" (pid {pid}"));
                if let Some(rss) = notice.killed_anon_rss_kb {
                    text.push_str(&format!(", {} anon RSS", mib(rss)));
                }
                text.push(')');
            }
            text.push('\n');
        }
        None => text.push_str("No process was killed\n"),
    }
    text.push_str(&format!(
        "Report verdict: {} · correlation: {}",
        quote(notice.report_verdict.as_str()),
        quote(notice.corr_verdict.as_str())
    ));
    if let Some(held) = notice.balloon_held_kb {
        text.push_str(&format!(" · balloon held {}", mib(held)));
    }
    // virtio-mem's part, where there is one (a balloon-only message reads as before).
    let took = host_took(notice);
    if let Some(unplugged) = took.unplugged_kib.filter(|kib| *kib > 0) {
        text.push_str(&format!(
            " · virtio-mem unplugged {} · host took: {}",
            mib(i64::try_from(unplugged).unwrap_or(i64::MAX)),
            quote(took.verdict.as_str())
        ));
    }
    text.push_str(&format!(
        "\nVM uuid {} · {} UTC · {} · {}",
        quote(&notice.vm_uuid),
        crate::reports::format::date_time(notice.captured_at_ms),
        link(dashboard, "dashboard"),
        link(api, "JSON"),
    ));
    text
}

/// A link in chat text; a bare path (no `notify.public_url`) is shown as code instead.
fn chat_link(slack: bool, url: &str, label: &str) -> String {
    if url.starts_with('/') {
        format!("{label} `{url}`")
    } else if slack {
        format!("<{url}|{label}>")
    } else {
        format!("[{label}]({url})")
    }
}

/// The body saying how many notifications the rate limit held back.
pub fn suppressed_body(
    format: WebhookFormat,
    webhook: &str,
    summary: &SuppressedSummary,
    limit: RateLimit,
    public_url: &str,
) -> Value {
    let list = format!("{public_url}/ooms");
    match format {
        WebhookFormat::Json => {
            let by_verdict: serde_json::Map<String, Value> = summary
                .by_verdict
                .iter()
                .map(|(verdict, n)| (verdict_name(*verdict).to_string(), json!(n)))
                .collect();
            json!({
                "type": "suppressed",
                "webhook": webhook,
                "suppressed": summary.count,
                "by_verdict": by_verdict,
                "first_captured_ms": summary.first_captured_ms,
                "last_captured_ms": summary.last_captured_ms,
                "rate_limit": {"messages": limit.messages, "window_secs": limit.window_secs},
                "links": {"dashboard": list},
            })
        }
        WebhookFormat::Slack | WebhookFormat::Mattermost => {
            let verdicts = summary
                .by_verdict
                .iter()
                .map(|(verdict, n)| format!("{n} {}", verdict_name(*verdict)))
                .collect::<Vec<_>>()
                .join(", ");
            let link = chat_link(format == WebhookFormat::Slack, &list, "all OOMs");
            let span = match (summary.first_captured_ms, summary.last_captured_ms) {
                (Some(first), Some(last)) => format!(
                    " between {} and {} UTC",
                    crate::reports::format::date_time(first),
                    crate::reports::format::date_time(last)
                ),
                _ => String::new(),
            };
            json!({"text": format!(
                ":mute: {n} more OOMs suppressed{span} (rate limit {m} messages per {w} s): {verdicts}. {link}",
                n = summary.count,
                m = limit.messages,
                w = limit.window_secs,
            )})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_model::{OomKind, ReportKind, ReportVerdict};

    fn notice(comm: &str) -> OomNotice {
        OomNotice {
            oom_id: 7,
            host: "pve1".into(),
            vm_uuid: "9a6c3b1e-0000-4000-8000-000000000100".into(),
            vm_name: "tor".into(),
            kind: OomKind::Guest,
            captured_at_ms: 1_795_672_800_000,
            killed_pid: Some(1234),
            killed_comm: Some(comm.into()),
            killed_anon_rss_kb: Some(400 * 1024),
            report_kind: ReportKind::Global,
            report_verdict: ReportVerdict::Balloon,
            corr_verdict: CorrelationVerdict::Balloon,
            balloon_held_kb: Some(256 * 1024),
            // A row stored before host_took: read from the balloon's verdict.
            correlation_json: r#"{"verdict":"balloon","balloon_held_kb":262144}"#.into(),
        }
    }

    #[test]
    fn the_json_body_has_what_a_receiver_checks() {
        let body = oom_body(WebhookFormat::Json, "ops", &notice("java"), "https://c");
        assert_eq!(body["type"], "oom");
        assert_eq!(body["oom_id"], 7);
        assert_eq!(body["killed"]["comm"], "java");
        assert_eq!(body["correlation"]["balloon_held_kb"], 262_144);
        assert_eq!(body["captured_at"], "2026-11-26T06:00:00Z");
        assert_eq!(body["links"]["dashboard"], "https://c/ooms/7");
        assert_eq!(
            body["correlation"]["host_took"]["verdict"],
            "host_took_memory"
        );
        assert_eq!(
            body["correlation"]["host_took"]["mechanisms"],
            serde_json::json!(["balloon"])
        );
    }

    /// An OOM after a virtio-mem unplug: the balloon's verdict stays `not_balloon`, the
    /// host's side names virtio-mem, in JSON and chat text.
    #[test]
    fn a_virtio_mem_oom_says_the_host_took_memory() {
        let mut notice = notice("stress-ng-vm");
        notice.corr_verdict = CorrelationVerdict::NotBalloon;
        notice.balloon_held_kb = Some(0);
        notice.correlation_json = serde_json::json!({
            "verdict": "not_balloon",
            "host_took": {"verdict": "host_took_memory", "mechanisms": ["virtio_mem"],
                "balloon_kib": 0, "unplugged_kib": 524_288, "total_kib": 524_288},
        })
        .to_string();
        let body = oom_body(WebhookFormat::Json, "ops", &notice, "https://c");
        assert_eq!(body["correlation"]["verdict"], "not_balloon");
        assert_eq!(
            body["correlation"]["host_took"]["verdict"],
            "host_took_memory"
        );
        assert_eq!(
            body["correlation"]["host_took"]["mechanisms"],
            serde_json::json!(["virtio_mem"])
        );
        let body = oom_body(WebhookFormat::Mattermost, "ops", &notice, "https://c");
        let text = body["text"].as_str().expect("text");
        assert!(
            text.contains("virtio-mem unplugged 512 MiB · host took: **host\\_took\\_memory**"),
            "{text}"
        );
    }

    #[test]
    fn hostile_names_ping_nobody_in_slack_or_mattermost() {
        let hostile = "<!channel> <script>`@here&\n";
        for format in [WebhookFormat::Slack, WebhookFormat::Mattermost] {
            let body = oom_body(format, "ops", &notice(hostile), "https://c");
            let text = body["text"].as_str().expect("text");
            assert!(!text.contains("<!channel>"), "{text}");
            assert!(!text.contains("<script>"), "{text}");
            assert!(!text.contains("@here"), "{text}");
            assert!(
                text.contains("&lt;!channel&gt;") || text.contains("&lt;\\!channel&gt;"),
                "{text}"
            );
            assert!(text.contains("balloon held 256 MiB"), "{text}");
        }
        let slack = oom_body(WebhookFormat::Slack, "ops", &notice(hostile), "https://c");
        let text = slack["text"].as_str().expect("text");
        // The process name stays inside its code span: the span's backticks are ours.
        assert!(
            text.contains("Killed `&lt;!channel&gt; &lt;script&gt;'@\u{2060}here&amp;`"),
            "{text}"
        );
        let mattermost = oom_body(
            WebhookFormat::Mattermost,
            "ops",
            &notice("a_b*c"),
            "https://c",
        );
        let text = mattermost["text"].as_str().expect("text");
        assert!(text.contains("Killed **a\\_b\\*c**"), "{text}");
    }

    #[test]
    fn without_a_public_url_links_are_paths() {
        let body = oom_body(WebhookFormat::Json, "ops", &notice("java"), "");
        assert_eq!(body["links"]["api"], "/api/v1/ooms/7");
        let slack = oom_body(WebhookFormat::Slack, "ops", &notice("java"), "");
        let text = slack["text"].as_str().expect("text");
        assert!(text.contains("dashboard `/ooms/7`"), "{text}");
        assert!(!text.contains("<"), "{text}");
    }

    #[test]
    fn a_summary_names_each_verdict_and_deleted_ooms() {
        let summary = SuppressedSummary {
            count: 45,
            by_verdict: vec![
                (Some(CorrelationVerdict::Balloon), 38),
                (Some(CorrelationVerdict::Unknown), 5),
                (None, 2),
            ],
            first_captured_ms: Some(1_795_672_800_000),
            last_captured_ms: Some(1_795_672_860_000),
        };
        let limit = RateLimit {
            messages: 10,
            window_secs: 3600,
        };
        let body = suppressed_body(WebhookFormat::Json, "ops", &summary, limit, "");
        assert_eq!(body["by_verdict"]["balloon"], 38, "{body}");
        assert_eq!(body["by_verdict"]["unknown"], 5, "{body}");
        assert_eq!(body["by_verdict"]["deleted"], 2, "{body}");
        let slack = suppressed_body(WebhookFormat::Slack, "ops", &summary, limit, "");
        let text = slack["text"].as_str().expect("text");
        assert!(text.contains("38 balloon, 5 unknown, 2 deleted"), "{text}");
    }

    #[test]
    fn long_names_are_capped() {
        let long = "x".repeat(5000);
        assert_eq!(plain(&long).chars().count(), MAX_TEXT_CHARS + 1);
    }
}
