//! Where backups are kept: an S3-compatible bucket (requests signed with the store's credentials,
//! path-style, over the operator's HTTP client) or a directory of a mounted volume claim. Blocking:
//! the backup and restore commands do one thing at a time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Body, Client, Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

/// Variables holding the store's credentials (from the Secret the tenant names).
pub const ACCESS_KEY_VARIABLE: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_VARIABLE: &str = "AWS_SECRET_ACCESS_KEY";
/// The region requests are signed for when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

/// How long a signed request stays valid.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);
/// Larger objects go up in parts of this size (S3 takes at most 5 GiB in one request).
const PART_SIZE: u64 = 256 << 20;
/// How long one request may take, a part's upload included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{object} does not exist")]
    NotFound { object: String },
    #[error("the store refused {action} of {object}: HTTP {status}{code}")]
    Refused { action: &'static str, object: String, status: u16, code: String },
    #[error("cannot reach the store at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("the store's credentials are missing: {0}")]
    Credentials(String),
    #[error("invalid store settings: {0}")]
    Settings(String),
    #[error("{object}: {source}")]
    Io { object: String, source: std::io::Error },
}

impl StoreError {
    /// Whether the store could not be reached (worth another try), rather than refusing.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// A store of backup objects, addressed by key (`<backup key>/<object>`).
pub enum Store {
    S3(Box<S3>),
    Directory(PathBuf),
}

/// An S3-compatible bucket and how to reach it.
pub struct S3 {
    bucket: Bucket,
    credentials: Credentials,
    http: Client,
    endpoint: String,
}

/// The `Code` of an S3 error document, when the body is one.
fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(&body[start..end])
}

impl Store {
    /// A bucket at `endpoint`, with the credentials from the environment.
    pub fn s3(endpoint: &str, bucket: &str, region: &str, http: Client) -> Result<Self, StoreError> {
        let variable = |name: &str| {
            std::env::var(name).ok().filter(|value| !value.is_empty()).ok_or_else(|| {
                StoreError::Credentials(format!(
                    "{name} is not set (the credentials Secret lacks the key, or is missing)"
                ))
            })
        };
        let credentials = Credentials::new(variable(ACCESS_KEY_VARIABLE)?, variable(SECRET_KEY_VARIABLE)?);
        let url = endpoint.parse().map_err(|error| StoreError::Settings(format!("endpoint {endpoint:?}: {error}")))?;
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_owned(), region.to_owned())
            .map_err(|error| StoreError::Settings(format!("bucket {bucket:?} at {endpoint}: {error}")))?;
        Ok(Self::S3(Box::new(S3 { bucket, credentials, http, endpoint: endpoint.to_owned() })))
    }

    /// How an object is named in messages: its URL or its path.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Self::S3(s3) => format!("s3://{}/{key}", s3.bucket.name()),
            Self::Directory(root) => root.join(key).display().to_string(),
        }
    }

    fn io(&self, key: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
        let object = self.describe(key);
        move |source| match source.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound { object: object.clone() },
            _ => StoreError::Io { object: object.clone(), source },
        }
    }

    /// Sends a request, turning the answers that are not a success into errors.
    fn send(
        &self,
        action: &'static str,
        key: &str,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<Response, StoreError> {
        let endpoint = match self {
            Self::S3(s3) => s3.endpoint.clone(),
            Self::Directory(_) => String::new(),
        };
        let response = request.timeout(REQUEST_TIMEOUT).send().map_err(|error| {
            // Without the URL: a signed URL is a credential while it lasts. The cause chain says
            // what failed (refused, timed out, no such host).
            let error = error.without_url();
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            StoreError::Unreachable { endpoint, message }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let object = self.describe(key);
        let body = response.text().unwrap_or_default();
        let code = error_code(&body).map(str::to_owned);
        if status.as_u16() == 404 && code.as_deref() != Some("NoSuchBucket") {
            return Err(StoreError::NotFound { object });
        }
        let code = code.map(|code| format!(" ({code})")).unwrap_or_default();
        Err(StoreError::Refused { action, object, status: status.as_u16(), code })
    }

    /// Whether the store is reachable with these credentials and holds the bucket (or the
    /// directory exists): checked before a snapshot is taken, so a store that cannot take it
    /// costs Redis no fork and says plainly why.
    pub fn check(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::S3(s3) => {
                let url = s3.bucket.head_bucket(Some(&s3.credentials)).sign(SIGNATURE_LIFETIME);
                match self.send("access", key, s3.http.head(url)) {
                    Ok(_) => Ok(()),
                    Err(StoreError::NotFound { .. }) => {
                        Err(StoreError::NotFound { object: format!("bucket {}", s3.bucket.name()) })
                    }
                    Err(error) => Err(error),
                }
            }
            Self::Directory(root) => std::fs::read_dir(root).map(|_| ()).map_err(self.io("")),
        }
    }

    /// Writes the file at `path` as `key`.
    pub fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        match self {
            Self::S3(s3) => {
                let (bucket, credentials, http) = (&s3.bucket, &s3.credentials, &s3.http);
                let size = std::fs::metadata(path).map_err(self.io(key))?.len();
                if size <= PART_SIZE {
                    let file = File::open(path).map_err(self.io(key))?;
                    let url = bucket.put_object(Some(credentials), key).sign(SIGNATURE_LIFETIME);
                    self.send("upload", key, http.put(url).body(Body::sized(file, size)))?;
                    return Ok(());
                }
                self.put_parts(key, path, size)
            }
            Self::Directory(root) => {
                let target = root.join(key);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(self.io(key))?;
                }
                // Whole or not at all: a reader never sees half a file.
                let partial = target.with_extension("partial");
                std::fs::copy(path, &partial).map_err(self.io(key))?;
                File::open(&partial).and_then(|file| file.sync_all()).map_err(self.io(key))?;
                std::fs::rename(&partial, &target).map_err(self.io(key))
            }
        }
    }

    /// A multipart upload of a file too large for one request; aborted if a part fails.
    fn put_parts(&self, key: &str, path: &Path, size: u64) -> Result<(), StoreError> {
        let Self::S3(s3) = self else { return Ok(()) };
        let (bucket, credentials, http) = (&s3.bucket, &s3.credentials, &s3.http);
        let url = bucket.create_multipart_upload(Some(credentials), key).sign(SIGNATURE_LIFETIME);
        let created = self.send("upload", key, http.post(url))?.text().unwrap_or_default();
        let upload = rusty_s3::actions::CreateMultipartUpload::parse_response(&created)
            .map_err(|error| StoreError::Settings(format!("the store's answer to a multipart upload: {error}")))?;
        let upload_id = upload.upload_id().to_owned();
        let parts = (|| {
            let mut etags = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < size {
                let length = PART_SIZE.min(size - offset);
                let mut file = File::open(path).map_err(self.io(key))?;
                file.seek(SeekFrom::Start(offset)).map_err(self.io(key))?;
                let url = bucket.upload_part(Some(credentials), key, number, &upload_id).sign(SIGNATURE_LIFETIME);
                let response = self.send("upload", key, http.put(url).body(Body::sized(file.take(length), length)))?;
                let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default();
                etags.push(etag.to_owned());
                offset += length;
                number += 1;
            }
            Ok(etags)
        })();
        match parts {
            Ok(etags) => {
                let complete = bucket.complete_multipart_upload(
                    Some(credentials),
                    key,
                    &upload_id,
                    etags.iter().map(String::as_str),
                );
                let url = complete.sign(SIGNATURE_LIFETIME);
                self.send("upload", key, http.post(url).body(complete.body()))?;
                Ok(())
            }
            Err(error) => {
                let url = bucket.abort_multipart_upload(Some(credentials), key, &upload_id).sign(SIGNATURE_LIFETIME);
                let _ = self.send("abort", key, http.delete(url));
                Err(error)
            }
        }
    }

    /// Writes `bytes` as `key`.
    pub fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Self::S3(s3) => {
                let (bucket, credentials, http) = (&s3.bucket, &s3.credentials, &s3.http);
                let url = bucket.put_object(Some(credentials), key).sign(SIGNATURE_LIFETIME);
                self.send("upload", key, http.put(url).body(bytes))?;
                Ok(())
            }
            Self::Directory(_) => {
                let staged = std::env::temp_dir().join(format!("neurallog-put-{}", std::process::id()));
                std::fs::write(&staged, bytes).map_err(self.io(key))?;
                let written = self.put_file(key, &staged);
                let _ = std::fs::remove_file(staged);
                written
            }
        }
    }

    /// Copies `key` into `out`; its size.
    pub fn get(&self, key: &str, out: &mut impl Write) -> Result<u64, StoreError> {
        match self {
            Self::S3(s3) => {
                let (bucket, credentials, http) = (&s3.bucket, &s3.credentials, &s3.http);
                let url = bucket.get_object(Some(credentials), key).sign(SIGNATURE_LIFETIME);
                let mut response = self.send("download", key, http.get(url))?;
                response.copy_to(out).map_err(|error| StoreError::Unreachable {
                    endpoint: self.describe(key),
                    message: format!("download broke off: {error}"),
                })
            }
            Self::Directory(root) => {
                let mut file = File::open(root.join(key)).map_err(self.io(key))?;
                std::io::copy(&mut file, out).map_err(self.io(key))
            }
        }
    }

    /// Deletes `key`; one that does not exist is fine.
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::S3(s3) => {
                let (bucket, credentials, http) = (&s3.bucket, &s3.credentials, &s3.http);
                let url = bucket.delete_object(Some(credentials), key).sign(SIGNATURE_LIFETIME);
                match self.send("delete", key, http.delete(url)) {
                    Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                    Err(error) => Err(error),
                }
            }
            Self::Directory(root) => match std::fs::remove_file(root.join(key)) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(self.io(key)(error)),
                _ => {
                    // The backup's directory goes with its last object.
                    if let Some(parent) = root.join(key).parent() {
                        let _ = std::fs::remove_dir(parent);
                    }
                    Ok(())
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_codes_are_read_from_the_error_document() {
        let body = "<?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body), Some("InvalidAccessKeyId"));
        assert_eq!(error_code("not xml"), None);
    }

    #[test]
    fn a_directory_store_writes_whole_objects_and_deletes_them_with_their_directory() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::Directory(root.path().to_owned());
        store.put_bytes("acme/b1/metadata.json", b"{}".to_vec()).unwrap();
        let mut read = Vec::new();
        assert_eq!(store.get("acme/b1/metadata.json", &mut read).unwrap(), 2);
        assert_eq!(read, b"{}");
        assert!(matches!(store.get("acme/b1/dump.rdb", &mut Vec::new()), Err(StoreError::NotFound { .. })));
        store.delete("acme/b1/metadata.json").unwrap();
        store.delete("acme/b1/metadata.json").unwrap();
        assert!(!root.path().join("acme/b1").exists());
    }
}
