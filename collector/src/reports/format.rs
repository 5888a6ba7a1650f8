//! Small pure formatters shared by the reports and the dashboard: memory sizes,
//! UTC dates and times (no time-zone database: everything is shown in UTC), rounding.

/// KiB in one MiB.
pub const MIB: u64 = 1024;
/// KiB in one GiB.
pub const GIB: u64 = 1024 * 1024;

/// A KiB figure for people: `512 MiB`, `1.5 GiB`, `900 KiB`.
pub fn kib(value: u64) -> String {
    if value >= 10 * GIB {
        format!("{:.0} GiB", value as f64 / GIB as f64)
    } else if value >= GIB {
        format!("{:.1} GiB", value as f64 / GIB as f64)
    } else if value >= MIB {
        format!("{} MiB", (value + MIB / 2) / MIB)
    } else {
        format!("{value} KiB")
    }
}

/// An optional KiB figure; `-` when unknown (missing is not 0).
pub fn opt_kib(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), kib)
}

/// Whole MiB, rounded up (what `qm set --balloon` takes).
pub fn mib_ceil(value_kib: u64) -> u64 {
    value_kib.div_ceil(MIB)
}

/// Rounds a KiB figure up to a multiple of `step_kib` (0 leaves it as it is).
pub fn round_up(value_kib: u64, step_kib: u64) -> u64 {
    if step_kib == 0 {
        value_kib
    } else {
        value_kib.div_ceil(step_kib).saturating_mul(step_kib)
    }
}

/// Days since 1970-01-01 to (year, month, day): H. Hinnant's civil_from_days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// `2026-11-26` (UTC).
pub fn date(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `2026-11-26 06:00:00` (UTC).
pub fn date_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        date(ms),
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// `06:00` (UTC), for chart axes.
pub fn hour_minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}", secs / 3600, (secs / 60) % 60)
}

/// `2026-11-26T06:00` (UTC): the value of an `<input type="datetime-local">`.
pub fn datetime_local(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{}T{:02}:{:02}", date(ms), secs / 3600, (secs / 60) % 60)
}

/// Reads `2026-11-26`, `2026-11-26T06:00` or `2026-11-26 06:00:00` (UTC) into Unix ms.
pub fn parse_date_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date_part, time_part) = match text.split_once(['T', ' ']) {
        Some((date_part, time_part)) => (date_part, Some(time_part)),
        None => (text, None),
    };
    let mut fields = date_part.splitn(3, '-');
    let year: i64 = fields.next()?.parse().ok()?;
    let month: i64 = fields.next()?.parse().ok()?;
    let day: i64 = fields.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return None;
    }
    // days_from_civil (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut secs = days * 86_400;
    if let Some(time_part) = time_part {
        let mut parts = time_part.splitn(3, ':');
        let hours: i64 = parts.next()?.parse().ok()?;
        let minutes: i64 = parts.next().unwrap_or("0").parse().ok()?;
        let seconds: i64 = parts.next().unwrap_or("0").parse().ok()?;
        if hours > 23 || minutes > 59 || seconds > 60 {
            return None;
        }
        secs += hours * 3600 + minutes * 60 + seconds;
    }
    Some(secs * 1000)
}

/// Parses a duration like `30d`, `12h`, `90m`, `3600s` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.len().checked_sub(1)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let unit_ms = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1000,
        _ => return None,
    };
    number.checked_mul(unit_ms)
}

/// Percent with one decimal.
pub fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_string();
    }
    format!("{:.1} %", part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(kib(900), "900 KiB");
        assert_eq!(kib(512 * MIB), "512 MiB");
        assert_eq!(kib(1536 * MIB), "1.5 GiB");
        assert_eq!(kib(32 * GIB), "32 GiB");
        assert_eq!(opt_kib(None), "-");
        assert_eq!(round_up(1, 64 * MIB), 64 * MIB);
        assert_eq!(round_up(64 * MIB, 64 * MIB), 64 * MIB);
        assert_eq!(mib_ceil(MIB + 1), 2);
    }

    #[test]
    fn dates_are_utc_and_round_trip() {
        let ms = 1_795_672_800_000;
        assert_eq!(date_time(ms), "2026-11-26 06:00:00");
        assert_eq!(parse_date_time("2026-11-26T06:00"), Some(ms));
        assert_eq!(parse_date_time("2026-11-26 06:00:00"), Some(ms));
        assert_eq!(parse_date_time("2026-11-26"), Some(ms - 6 * 3_600_000));
        assert_eq!(parse_date_time(&datetime_local(ms)), Some(ms));
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400_000), "2000-02-29");
        assert_eq!(parse_date_time("2026-13-01"), None);
        assert_eq!(parse_date_time("soon"), None);
    }

    #[test]
    fn durations_have_a_unit() {
        assert_eq!(parse_duration_ms("30d"), Some(30 * 86_400_000));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("30"), None);
        assert_eq!(parse_duration_ms("-3d"), None);
        assert_eq!(parse_duration_ms(""), None);
    }
}
