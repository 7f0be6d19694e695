//! A tenant's backups and restore, as the reconciler sees them: where backups go, when they are
//! due, which ones retention deletes, and where a new tenant's Redis starts from. Pure.

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::InvalidSpec;
use crate::api::backup::{BackupDestination, BackupLocation, BackupPhase, S3Location, VolumeClaimLocation};

/// Scheduled backups kept when the spec says nothing.
pub const DEFAULT_KEEP: usize = 7;
/// Label on the TenantBackups a schedule created (retention deletes only those).
pub const SCHEDULED_LABEL: &str = "neurallog.io/backup-schedule";
/// Annotation on a scheduled TenantBackup: the time it was due (RFC 3339).
pub const SCHEDULED_AT_ANNOTATION: &str = "neurallog.io/scheduled-at";

/// The tenant's backups: when, how many scheduled ones are kept, and where they go.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupModel {
    pub schedule: Option<Schedule>,
    pub keep: usize,
    pub destination: BackupDestination,
}

/// A cron schedule (five fields, UTC), checked when the model is built.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule(String);

fn parse_cron(text: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder().seconds(Seconds::Disallowed).build().parse(text)
}

impl Schedule {
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidSpec> {
        parse_cron(text)
            .map_err(|error| InvalidSpec::new(field, format!("{text:?} is not a cron schedule: {error}")))?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn cron(&self) -> Option<Cron> {
        parse_cron(&self.0).ok()
    }

    /// The latest time at or before `now` the schedule names.
    pub fn latest_due(&self, now: Timestamp) -> Option<Timestamp> {
        let now = now.to_zoned(TimeZone::UTC);
        self.cron()?.find_previous_occurrence(&now, true).ok().map(|due| due.timestamp())
    }

    /// The first time after `now` the schedule names.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let now = now.to_zoned(TimeZone::UTC);
        self.cron()?.find_next_occurrence(&now, false).ok().map(|due| due.timestamp())
    }
}

/// Where a backup of `tenant` named `backup` is kept at `destination`.
pub fn location(destination: &BackupDestination, tenant: &str, backup: &str) -> Option<BackupLocation> {
    if let Some(s3) = &destination.s3 {
        let key = match &s3.prefix {
            Some(prefix) => format!("{}/{tenant}/{backup}", prefix.trim_end_matches('/')),
            None => format!("{tenant}/{backup}"),
        };
        return Some(BackupLocation {
            s3: Some(S3Location {
                endpoint: s3.endpoint.trim_end_matches('/').to_owned(),
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                key,
                credentials_secret: s3.credentials_secret.clone(),
            }),
            volume_claim: None,
        });
    }
    let claim = destination.volume_claim.as_ref()?;
    Some(BackupLocation {
        s3: None,
        volume_claim: Some(VolumeClaimLocation {
            claim_name: claim.claim_name.clone(),
            path: format!("{tenant}/{backup}"),
        }),
    })
}

/// Where a new tenant's Redis starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreSource {
    /// A TenantBackup, by name: its status says where it is.
    Backup(String),
    Location(BackupLocation),
}

/// The restore of a new tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreModel {
    /// What the spec asks for; `None` once it was removed after the restore.
    pub source: Option<RestoreSource>,
    /// Where the backup is: what the status records (resolved once, kept for good, so the Redis
    /// template never changes), else what the reconcile resolved the source to.
    pub location: Option<BackupLocation>,
}

/// A backup of the tenant, as the schedule and retention see it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSummary {
    pub name: String,
    /// When the schedule made it due; `None` for a backup created by hand.
    pub scheduled_at: Option<Timestamp>,
    pub phase: Option<BackupPhase>,
    pub created: Option<Timestamp>,
    pub completed: Option<Timestamp>,
    /// Being deleted already.
    pub deleting: bool,
}

/// The name of the scheduled backup of `tenant` due at `due`: the same for every replica and
/// every retry, so a due backup is created once.
pub fn scheduled_name(tenant: &str, due: Timestamp) -> String {
    format!("{tenant}-{}", due.strftime("%Y%m%d%H%M"))
}

/// The scheduled backup to create now, if one is due: the latest time the schedule names, unless
/// it is before the tenant existed or a scheduled backup for it (or a later one) exists.
pub fn due(
    schedule: &Schedule,
    tenant_created: Timestamp,
    now: Timestamp,
    backups: &[BackupSummary],
) -> Option<Timestamp> {
    let due = schedule.latest_due(now)?;
    if due < tenant_created {
        return None;
    }
    let taken = backups.iter().filter_map(|b| b.scheduled_at).any(|at| at >= due);
    (!taken).then_some(due)
}

/// The scheduled backups retention deletes: every finished one older than the `keep` newest that
/// succeeded. Backups created by hand, running ones and newer failures stay.
pub fn expired(backups: &[BackupSummary], keep: usize) -> Vec<String> {
    let mut scheduled: Vec<&BackupSummary> =
        backups.iter().filter(|b| b.scheduled_at.is_some() && !b.deleting).collect();
    scheduled.sort_by_key(|b| std::cmp::Reverse(b.scheduled_at));
    let succeeded = |b: &&&BackupSummary| b.phase == Some(BackupPhase::Succeeded);
    let Some(oldest_kept) = scheduled.iter().filter(succeeded).nth(keep.saturating_sub(1)).map(|b| b.scheduled_at)
    else {
        return Vec::new();
    };
    scheduled
        .iter()
        .filter(|b| b.scheduled_at < oldest_kept)
        .filter(|b| matches!(b.phase, Some(BackupPhase::Succeeded | BackupPhase::Failed)))
        .map(|b| b.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup::{S3Destination, VolumeClaimDestination};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn scheduled(name: &str, when: &str, phase: BackupPhase) -> BackupSummary {
        BackupSummary {
            name: name.into(),
            scheduled_at: Some(at(when)),
            phase: Some(phase),
            created: Some(at(when)),
            completed: None,
            deleting: false,
        }
    }

    #[test]
    fn a_schedule_is_five_cron_fields_and_names_its_field_when_it_is_not() {
        assert!(Schedule::parse("spec.backup.schedule", "*/1 * * * *").is_ok());
        assert!(Schedule::parse("spec.backup.schedule", "0 3 * * MON").is_ok());
        let error = Schedule::parse("spec.backup.schedule", "61 * * * *").unwrap_err();
        assert_eq!(error.field, "spec.backup.schedule");
        assert!(Schedule::parse("spec.backup.schedule", "0 0 3 * * *").is_err(), "no seconds field");
    }

    #[test]
    fn the_latest_due_time_is_at_or_before_now_and_the_next_after_it() {
        let every_minute = Schedule::parse("f", "* * * * *").unwrap();
        assert_eq!(every_minute.latest_due(at("2026-12-07T10:00:30Z")), Some(at("2026-12-07T10:00:00Z")));
        assert_eq!(every_minute.next_after(at("2026-12-07T10:00:30Z")), Some(at("2026-12-07T10:01:00Z")));
        let nightly = Schedule::parse("f", "0 3 * * *").unwrap();
        assert_eq!(nightly.latest_due(at("2026-12-07T02:59:00Z")), Some(at("2026-12-06T03:00:00Z")));
    }

    #[test]
    fn a_due_backup_is_created_once_and_never_for_a_time_before_the_tenant() {
        let schedule = Schedule::parse("f", "*/5 * * * *").unwrap();
        let now = at("2026-12-07T10:07:00Z");
        assert_eq!(due(&schedule, at("2026-12-07T09:00:00Z"), now, &[]), Some(at("2026-12-07T10:05:00Z")));
        assert_eq!(due(&schedule, at("2026-12-07T10:06:00Z"), now, &[]), None, "due before the tenant existed");
        let taken = [scheduled("t-202612071005", "2026-12-07T10:05:00Z", BackupPhase::Running)];
        assert_eq!(due(&schedule, at("2026-12-07T09:00:00Z"), now, &taken), None);
        let older = [scheduled("t-202612071000", "2026-12-07T10:00:00Z", BackupPhase::Succeeded)];
        assert!(due(&schedule, at("2026-12-07T09:00:00Z"), now, &older).is_some());
        assert_eq!(scheduled_name("acme", at("2026-12-07T10:05:00Z")), "acme-202612071005");
    }

    #[test]
    fn retention_keeps_the_newest_successes_and_what_is_newer_than_them() {
        let backups = vec![
            scheduled("b1", "2026-12-07T10:01:00Z", BackupPhase::Succeeded),
            scheduled("b2", "2026-12-07T10:02:00Z", BackupPhase::Failed),
            scheduled("b3", "2026-12-07T10:03:00Z", BackupPhase::Succeeded),
            scheduled("b4", "2026-12-07T10:04:00Z", BackupPhase::Succeeded),
            scheduled("b5", "2026-12-07T10:05:00Z", BackupPhase::Failed),
            scheduled("b6", "2026-12-07T10:06:00Z", BackupPhase::Running),
            BackupSummary {
                scheduled_at: None,
                ..scheduled("by-hand", "2026-12-07T09:00:00Z", BackupPhase::Succeeded)
            },
        ];
        assert_eq!(expired(&backups, 2), vec!["b2".to_owned(), "b1".to_owned()]);
        assert_eq!(expired(&backups, 3), Vec::<String>::new());
        assert_eq!(expired(&backups, 1), vec!["b3".to_owned(), "b2".to_owned(), "b1".to_owned()]);
        let mut deleting = backups.clone();
        deleting[0].deleting = true;
        assert_eq!(expired(&deleting, 2), vec!["b2".to_owned()], "one being deleted is not deleted again");
    }

    #[test]
    fn a_backup_is_kept_under_the_prefix_the_tenant_and_its_name() {
        let s3 = BackupDestination {
            s3: Some(S3Destination {
                endpoint: "http://store:7070/".into(),
                bucket: "logs".into(),
                prefix: Some("prod".into()),
                region: None,
                credentials_secret: "store".into(),
            }),
            volume_claim: None,
        };
        let location = location(&s3, "acme", "acme-202612071005").unwrap().s3.unwrap();
        assert_eq!(
            (location.endpoint.as_str(), location.key.as_str()),
            ("http://store:7070", "prod/acme/acme-202612071005")
        );
        let claim =
            BackupDestination { s3: None, volume_claim: Some(VolumeClaimDestination { claim_name: "backups".into() }) };
        assert_eq!(super::location(&claim, "acme", "b").unwrap().volume_claim.unwrap().path, "acme/b");
    }
}
