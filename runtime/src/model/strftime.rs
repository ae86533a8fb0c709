//! `strftime_now`, the one time function Hugging Face chat templates call (Llama 3.x writes
//! "Today Date: 06 Dec 2026" into its system turn). Python's `strftime` over a UTC time, for
//! the directives such templates use; anything else is an error naming the directive, never a
//! silently wrong date.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of `days` since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Formats `unix_seconds` (UTC) like Python's `datetime.strftime(format)` for `%d %e %m %y %Y
/// %b %B %h %a %A %j %H %I %M %S %p %%`.
pub(crate) fn strftime(format: &str, unix_seconds: i64) -> Result<String, String> {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let month_name = MONTHS[month as usize - 1];
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year = cumulative[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('Y') => out.push_str(&year.to_string()),
            Some('b' | 'h') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("strftime_now: unsupported directive %{other}")),
            None => return Err("strftime_now: format ends with a lone %".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_pythons_strftime() {
        // python3 -c "import datetime as d; t=d.datetime.fromtimestamp(S, d.timezone.utc);
        //             print(t.strftime('%d %b %Y|%A %j %I %p %e|%B %y %H:%M:%S'))"
        let cases = [
            (0, "01 Jan 1970|Thursday 001 12 AM  1|January 70 00:00:00"),
            (
                1_796_564_156,
                "06 Dec 2026|Sunday 340 01 PM  6|December 26 13:35:56",
            ),
            (
                951_782_400,
                "29 Feb 2000|Tuesday 060 12 AM 29|February 00 00:00:00",
            ),
            (
                4_107_542_399,
                "28 Feb 2100|Sunday 059 11 PM 28|February 00 23:59:59",
            ),
        ];
        for (secs, want) in cases {
            let got = strftime("%d %b %Y|%A %j %I %p %e|%B %y %H:%M:%S", secs).unwrap();
            assert_eq!(got, want, "{secs}");
        }
    }

    #[test]
    fn unknown_directives_are_errors() {
        assert!(strftime("%Q", 0).unwrap_err().contains("%Q"));
        assert!(strftime("50%", 0).is_err());
        assert_eq!(strftime("100%%", 0).unwrap(), "100%");
    }
}
