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

/// The UTC calendar date and time of Unix `ms`, clamped to years 1..9999 (a hostile or
/// corrupt time stamp shows as the nearest representable date, never as garbage).
pub fn utc(ms: i64) -> time::PrimitiveDateTime {
    let secs = ms.div_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(at) => time::PrimitiveDateTime::new(at.date(), at.time()),
        Err(_) if secs < 0 => time::PrimitiveDateTime::MIN,
        Err(_) => time::PrimitiveDateTime::MAX,
    }
}

/// `2026-11-26` (UTC).
pub fn date(ms: i64) -> String {
    let at = utc(ms);
    format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

/// `2026-11-26 06:00:00` (UTC).
pub fn date_time(ms: i64) -> String {
    let at = utc(ms);
    format!(
        "{} {:02}:{:02}:{:02}",
        date(ms),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `06:00` (UTC), for chart axes.
pub fn hour_minute(ms: i64) -> String {
    let at = utc(ms);
    format!("{:02}:{:02}", at.hour(), at.minute())
}

/// `2026-11-26T06:00` (UTC): the value of an `<input type="datetime-local">`.
pub fn datetime_local(ms: i64) -> String {
    let at = utc(ms);
    format!("{}T{:02}:{:02}", date(ms), at.hour(), at.minute())
}

/// Reads `2026-11-26`, `2026-11-26T06:00` or `2026-11-26 06:00:00` (UTC) into Unix ms.
pub fn parse_date_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date_part, time_part) = match text.split_once(['T', ' ']) {
        Some((date_part, time_part)) => (date_part, Some(time_part)),
        None => (text, None),
    };
    let mut fields = date_part.splitn(3, '-');
    let year: i32 = fields.next()?.parse().ok()?;
    let month: u8 = fields.next()?.parse().ok()?;
    let day: u8 = fields.next()?.parse().ok()?;
    if !(1970..=9999).contains(&year) {
        return None;
    }
    // A real calendar date: 2026-02-30 is refused, not read as March 2nd.
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let mut secs = date.midnight().assume_utc().unix_timestamp();
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
        assert_eq!(parse_date_time("2026-02-30"), None);
        assert_eq!(parse_date_time("soon"), None);
        // Corrupt time stamps show as the nearest date there is, never as garbage.
        assert_eq!(date(i64::MAX), "9999-12-31");
        assert_eq!(date(i64::MIN), "-9999-01-01");
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
