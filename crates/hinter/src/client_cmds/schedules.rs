//! `hinter schedules list|show|add|rm|pause|resume|history` (docs/schedules.md).

use super::*;
use hinter_client::{Misfire, Outcome, Overlap, ScheduleInfo, ScheduleSpec};

/// `hinter schedules …`
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: SchedulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List schedules with their next fire time
    List,
    /// Show a schedule and its next fire times
    Show {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Create a schedule (--replace: create or replace)
    Add(Box<AddArgs>),
    /// Delete a schedule and its history
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Stop firing a schedule
    Pause {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Fire a paused schedule again, from now on
    Resume {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// What became of a schedule's occurrences (fired, skipped, missed), latest first
    History {
        #[arg(value_name = "NAME")]
        name: String,
        /// Most occurrences shown (1…1000)
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: u32,
        /// Only occurrences due before this time (RFC 3339), to page back
        #[arg(long, value_name = "TIME", value_parser = time_arg)]
        before: Option<DateTime<Utc>>,
    },
}

/// `hinter schedules add NAME (--cron EXPR | --at TIME) --job JOB [PAYLOAD|-]`
#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Cron expression: 5 fields, 6 with seconds first, or @hourly, @daily, …
    #[arg(
        long,
        value_name = "EXPR",
        required_unless_present = "at",
        conflicts_with = "at"
    )]
    pub cron: Option<String>,
    /// Fire once at this time (RFC 3339)
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub at: Option<DateTime<Utc>>,
    /// IANA time zone the cron expression is read in
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub time_zone: String,
    /// The job each occurrence enqueues
    #[arg(long, value_name = "JOB")]
    pub job: String,
    /// Payload of the jobs as JSON text; '-' reads it from standard input; absent: null
    #[arg(value_name = "PAYLOAD|-")]
    pub payload: Option<String>,
    /// Queue of the jobs (default: the job's definition, else `default`)
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Priority of the jobs (-1000…1000)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// When the previous occurrence's job is still unfinished: skip, allow, replace
    #[arg(long, value_name = "POLICY", default_value = "skip", value_parser = ["skip", "allow", "replace"])]
    pub overlap: String,
    /// Occurrences missed while no server ran: skip, run_once, catch_up
    #[arg(long, value_name = "POLICY", default_value = "run_once", value_parser = ["skip", "run_once", "catch_up"])]
    pub misfire: String,
    /// Create it paused
    #[arg(long)]
    pub paused: bool,
    /// Replace a schedule of that name instead of refusing (PUT)
    #[arg(long)]
    pub replace: bool,
}

impl AddArgs {
    fn spec(self) -> Result<ScheduleSpec, Failure> {
        let payload = read_payload(self.payload.as_deref())?;
        let overlap = match self.overlap.as_str() {
            "allow" => Overlap::Allow,
            "replace" => Overlap::Replace,
            _ => Overlap::Skip,
        };
        let misfire = match self.misfire.as_str() {
            "skip" => Misfire::Skip,
            "catch_up" => Misfire::CatchUp,
            _ => Misfire::RunOnce,
        };
        Ok(ScheduleSpec {
            name: self.name,
            cron: self.cron,
            at: self.at,
            time_zone: self.time_zone,
            job: self.job,
            payload,
            queue: self.queue,
            priority: self.priority,
            overlap,
            misfire,
            paused: self.paused,
        })
    }
}

fn when(schedule: &ScheduleInfo) -> String {
    match (&schedule.cron, schedule.at) {
        (Some(cron), _) if schedule.time_zone == "UTC" => cron.clone(),
        (Some(cron), _) => format!("{cron} ({})", schedule.time_zone),
        (None, Some(at)) => format!("at {}", time(at)),
        (None, None) => String::new(),
    }
}

fn status(schedule: &ScheduleInfo) -> &'static str {
    if schedule.paused {
        "paused"
    } else if schedule.next_fire_at.is_none() {
        "done"
    } else {
        "active"
    }
}

fn details(s: &ScheduleInfo) -> String {
    let mut text = String::new();
    let mut line = |k: &str, v: String| text.push_str(&format!("{k:<14}{v}\n"));
    line("name", s.name.clone());
    line("when", when(s));
    line("job", s.job.clone());
    line("payload", s.payload.to_string());
    if let Some(queue) = &s.queue {
        line("queue", queue.clone());
    }
    if let Some(priority) = s.priority {
        line("priority", priority.to_string());
    }
    line("overlap", json_word(&s.overlap));
    line("misfire", json_word(&s.misfire));
    line("status", status(s).into());
    line("source", s.source.clone());
    let next: Vec<String> = s.next_fire_times.iter().map(|t| time(*t)).collect();
    line(
        "next",
        if next.is_empty() {
            "-".into()
        } else {
            next.join(", ")
        },
    );
    text
}

/// The wire name of a policy (`run_once`).
fn json_word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) async fn run(args: SchedulesArgs) -> CmdResult {
    let client = args.opts.client()?;
    let json = args.opts.json;
    match args.command {
        SchedulesCommand::List => {
            let schedules = client.schedules().await?;
            if json {
                #[derive(Serialize)]
                struct ListOut<'a> {
                    schedules: &'a [ScheduleInfo],
                }
                out_json(&ListOut {
                    schedules: &schedules,
                })?;
            } else {
                let mut table = Table::new(&["SCHEDULE", "WHEN", "JOB", "STATUS", "NEXT"]);
                for s in &schedules {
                    table.row(vec![
                        s.name.clone(),
                        when(s),
                        s.job.clone(),
                        status(s).into(),
                        s.next_fire_times
                            .first()
                            .map(|t| time(*t))
                            .unwrap_or("-".into()),
                    ]);
                }
                out_table(&table, "no schedules yet")?;
            }
        }
        SchedulesCommand::Show { name } => {
            let schedule = client.schedule(&name).await?;
            if json {
                out_json(&schedule)?;
            } else {
                out(&details(&schedule))?;
            }
        }
        SchedulesCommand::Add(add) => {
            let replace = add.replace;
            let spec = add.spec()?;
            let schedule = if replace {
                client.put_schedule(&spec).await?
            } else {
                client.create_schedule(&spec).await?
            };
            if json {
                out_json(&schedule)?;
            } else {
                out(&details(&schedule))?;
            }
        }
        SchedulesCommand::Rm { name } => {
            let schedule = client.delete_schedule(&name).await?;
            if json {
                out_json(&schedule)?;
            } else {
                out(&format!("deleted schedule {}\n", schedule.name))?;
            }
        }
        SchedulesCommand::Pause { name } => {
            let schedule = client.pause_schedule(&name).await?;
            if json {
                out_json(&schedule)?;
            } else {
                out(&format!("paused schedule {}\n", schedule.name))?;
            }
        }
        SchedulesCommand::Resume { name } => {
            let schedule = client.resume_schedule(&name).await?;
            if json {
                out_json(&schedule)?;
            } else {
                let next = schedule
                    .next_fire_times
                    .first()
                    .map(|t| format!(", next at {}", time(*t)))
                    .unwrap_or_default();
                out(&format!("resumed schedule {}{next}\n", schedule.name))?;
            }
        }
        SchedulesCommand::History {
            name,
            limit,
            before,
        } => {
            let page = client.schedule_history(&name, Some(limit), before).await?;
            if json {
                out_json(&page)?;
            } else {
                let mut table = Table::new(&["FIRE TIME", "OUTCOME", "JOB", "REASON"]);
                for o in &page.occurrences {
                    table.row(vec![
                        time(o.fire_time),
                        match o.outcome {
                            Outcome::Fired => "fired",
                            Outcome::Skipped => "skipped",
                            Outcome::Missed => "missed",
                        }
                        .into(),
                        o.job_id.map(|id| id.to_string()).unwrap_or("-".into()),
                        o.reason.clone().unwrap_or_default(),
                    ]);
                }
                out_table(&table, "no occurrences yet")?;
                if let Some(before) = page.next_before {
                    out(&format!(
                        "older: hinter schedules history {name} --before {}\n",
                        before.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                    ))?;
                }
            }
        }
    }
    Ok(exit::OK)
}
