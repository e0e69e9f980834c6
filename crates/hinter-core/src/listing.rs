//! Paging through jobs in enqueue order without missing one that commits late.
//!
//! A job's place in the listing is its sequence number, taken when it is inserted. On
//! PostgreSQL a transaction may take a number, stay open, and commit after a job with a higher
//! number was listed; a cursor that only said "after N" would skip it. So a cursor also says
//! which jobs up to N a page could not see: those not visible in the snapshot it was read in.
//! The next page first returns those that are visible now ("late" jobs, in enqueue order),
//! then the jobs after N. When a page ends inside the late jobs, the ones up to its last job
//! that it could not see are described by its own snapshot, so a cursor holds a few
//! ranges, each with a snapshot ([`Unseen`]). SQLite commits one writer at a time in sequence
//! order, so its cursors are plain numbers. See [`crate::Store::job_page`].

use crate::job::Job;
use std::fmt;
use std::str::FromStr;

/// Most transactions a snapshot in a cursor may name as in flight: far above any server's
/// `max_connections`, and it bounds what a client can make the server parse.
pub const MAX_SNAPSHOT_XIDS: usize = 100_000;

/// Most ranges a cursor holds. One more is added only by a page that ends inside the late
/// jobs before the lowest range's end (a job committing late while earlier late ones are
/// being listed); past this, the two lowest ranges are merged under the older snapshot,
/// which may list a job a second time but never skips one.
pub const MAX_UNSEEN_RANGES: usize = 16;

/// Where the next page of a job listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// The jobs up to this sequence number were listed, except those `unseen` names.
    pub after_seq: i64,
    /// PostgreSQL: the jobs up to `after_seq` not listed yet, as ranges of sequence numbers
    /// from the highest down: `unseen[i]` covers the numbers above `unseen[i + 1].through`
    /// (or 0) up to its `through` (`unseen[0].through` is `after_seq`), and of those the jobs
    /// that were not visible in its snapshot. Empty: nothing was unseen.
    pub unseen: Vec<Unseen>,
}

/// One range of a cursor's unseen jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unseen {
    pub through: i64,
    pub snapshot: Snapshot,
}

/// A page of a job listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Where the next page starts; `None` at the end of the listing.
    pub next: Option<ListCursor>,
}

impl ListCursor {
    /// A cursor after the job with sequence number `seq`, with nothing unseen.
    pub fn after(seq: i64) -> Self {
        Self {
            after_seq: seq,
            unseen: Vec::new(),
        }
    }

    /// The cursor of a page that ended inside the late jobs at `last`, read in `snapshot`:
    /// the ranges above `last` stay (the lowest of them cut at `last`), and the jobs up to
    /// `last` not listed yet are exactly those not visible in `snapshot`.
    pub fn late_through(&self, last: i64, snapshot: Snapshot) -> Self {
        let mut unseen: Vec<Unseen> = self
            .unseen
            .iter()
            .filter(|u| u.through > last)
            .cloned()
            .collect();
        unseen.push(Unseen {
            through: last,
            snapshot,
        });
        if unseen.len() > MAX_UNSEEN_RANGES {
            // The range above reaches down in its place, under its older snapshot: it saw
            // less, so it names more.
            unseen.pop();
        }
        Self {
            after_seq: self.after_seq,
            unseen,
        }
    }
}

/// A PostgreSQL snapshot as `pg_snapshot` prints it: `xmin:xmax:xip,xip,…`, checked so that
/// only well-formed text reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(String);

impl Snapshot {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Snapshot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a snapshot");
        let mut parts = s.split(':');
        let (Some(xmin), Some(xmax), Some(xip), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let number = |n: &str| {
            if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n.parse::<u64>().ok()
        };
        let (Some(xmin), Some(xmax)) = (number(xmin), number(xmax)) else {
            return Err(bad());
        };
        if xmin == 0 || xmin > xmax {
            return Err(bad());
        }
        if !xip.is_empty() {
            let mut count = 0;
            let mut previous = None;
            for x in xip.split(',') {
                count += 1;
                let x = number(x).ok_or_else(bad)?;
                // PostgreSQL prints them ascending, each in [xmin, xmax).
                if x < xmin || x >= xmax || previous.is_some_and(|p| p >= x) {
                    return Err(bad());
                }
                previous = Some(x);
            }
            if count > MAX_SNAPSHOT_XIDS {
                return Err(format!(
                    "a snapshot names at most {MAX_SNAPSHOT_XIDS} transactions"
                ));
            }
        }
        Ok(Self(s.to_string()))
    }
}

/// Fields of the text form are separated by `~`, which neither numbers nor snapshots use.
const SEP: char = '~';

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.after_seq)?;
        for (i, unseen) in self.unseen.iter().enumerate() {
            if i > 0 {
                write!(f, "{SEP}{}", unseen.through)?;
            }
            write!(f, "{SEP}{}", unseen.snapshot.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for ListCursor {
    type Err = String;

    /// `SEQ`, then optionally `~SNAPSHOT`, then any number of `~THROUGH~SNAPSHOT` with
    /// decreasing `THROUGH` below `SEQ`, as [`fmt::Display`] writes them.
    fn from_str(s: &str) -> Result<Self, String> {
        // Canonical positive numbers only: one job, one spelling.
        let seq = |n: &str| {
            n.parse::<i64>()
                .ok()
                .filter(|v| *v >= 1 && v.to_string() == n)
        };
        let bad = || "not a cursor from next_cursor".to_string();
        let mut parts = s.split(SEP);
        let after_seq = parts.next().and_then(seq).ok_or_else(bad)?;
        let mut unseen: Vec<Unseen> = Vec::new();
        if let Some(snapshot) = parts.next() {
            unseen.push(Unseen {
                through: after_seq,
                snapshot: snapshot.parse()?,
            });
        }
        while let Some(through) = parts.next() {
            let above = unseen.last().map_or(after_seq, |u| u.through);
            let through = seq(through).filter(|t| *t < above).ok_or_else(bad)?;
            let snapshot = parts.next().ok_or_else(bad)?.parse()?;
            if unseen.len() >= MAX_UNSEEN_RANGES {
                return Err(bad());
            }
            unseen.push(Unseen { through, snapshot });
        }
        Ok(Self { after_seq, unseen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(s: &str) -> Snapshot {
        s.parse().expect("snapshot")
    }

    #[test]
    fn cursors_round_trip() {
        for text in [
            "1",
            "42",
            "42~100:105:",
            "42~100:105:101,104",
            "42~100:105:101~17~103:110:104,109",
            "42~100:105:101~17~103:110:104,109~3~1:2:",
        ] {
            let cursor: ListCursor = text.parse().expect(text);
            assert_eq!(cursor.to_string(), text);
        }
        let cursor: ListCursor = "7~5:9:6~3~8:12:".parse().expect("parses");
        assert_eq!(cursor.after_seq, 7);
        assert_eq!(
            cursor.unseen,
            vec![
                Unseen {
                    through: 7,
                    snapshot: snapshot("5:9:6")
                },
                Unseen {
                    through: 3,
                    snapshot: snapshot("8:12:")
                },
            ]
        );
    }

    #[test]
    fn a_page_ending_among_late_jobs_keeps_the_ranges_above_it() {
        let cursor: ListCursor = "10~5:9:6~6~8:12:".parse().expect("parses");
        // Ends above the lower range: that range is covered by the new snapshot.
        let next = cursor.late_through(8, snapshot("11:14:"));
        assert_eq!(next.to_string(), "10~5:9:6~8~11:14:");
        // Ends below it: a third range.
        let next = cursor.late_through(4, snapshot("11:14:"));
        assert_eq!(next.to_string(), "10~5:9:6~6~8:12:~4~11:14:");
        // Never more than the bound; the lowest merge under the older snapshot.
        let mut cursor = ListCursor {
            after_seq: 1_000,
            unseen: vec![Unseen {
                through: 1_000,
                snapshot: snapshot("1:2:"),
            }],
        };
        for last in (900..980).rev() {
            cursor = cursor.late_through(last, snapshot("3:4:"));
            assert!(cursor.unseen.len() <= MAX_UNSEEN_RANGES);
            assert_eq!(cursor.to_string().parse::<ListCursor>(), Ok(cursor.clone()));
        }
    }

    #[test]
    fn malformed_cursors_are_refused() {
        for text in [
            "",
            "0",
            "-1",
            "+5",
            " 5",
            "5 ",
            "05",
            "abc",
            "9223372036854775808",
            "5~",
            "5~1:2",
            "5~1:2:3",   // xip outside [xmin, xmax)
            "5~2:1:",    // xmin > xmax
            "5~0:1:",    // no transaction id 0
            "5~1:9:4,3", // not ascending
            "5~1:9:3,3", // repeated
            "5~1:9:x",
            "5~1:9:3,",
            "5~1:9:;DROP TABLE jobs",
            "5~1:9:~3",             // a range without its snapshot
            "5~1:9:~5~1:9:",        // not below the range above
            "5~1:9:~3~1:9:~3~1:9:", // not decreasing
            "5~1:9:~0~1:9:",
            "5~99999999999999999999:1:",
        ] {
            assert!(text.parse::<ListCursor>().is_err(), "{text:?}");
        }
        let huge = format!(
            "5~1:{}:{}",
            MAX_SNAPSHOT_XIDS + 10,
            (1..=MAX_SNAPSHOT_XIDS + 1)
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(huge.parse::<ListCursor>().is_err());
        let many = format!(
            "100~1:2:{}",
            (1..=MAX_SNAPSHOT_XIDS.min(20))
                .rev()
                .map(|t| format!("~{t}~1:2:"))
                .collect::<String>()
        );
        assert!(many.parse::<ListCursor>().is_err(), "too many ranges");
    }
}
