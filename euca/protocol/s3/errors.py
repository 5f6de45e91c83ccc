"""S3 error responses: the codes Walrus answers with their HTTP status and default message, the `S3Error` every
layer raises, and its XML rendering."""

from __future__ import annotations

from collections.abc import Iterable

from euca.protocol.s3.wire import document, escape

ERRORS: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AccessControlListNotSupported": (400, "The bucket does not allow ACLs"),
    "InvalidBucketAclWithObjectOwnership": (
        400,
        "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
    ),
    "InvalidBucketState": (409, "The request is not valid with the current state of the bucket."),
    "InvalidRetentionPeriod": (400, "Default retention period must be a positive integer value."),
    "InvalidTargetBucketForLogging": (400, "The target bucket for logging does not exist"),
    "NoSuchLifecycleConfiguration": (404, "The lifecycle configuration does not exist"),
    "NoSuchObjectLockConfiguration": (404, "The specified object does not have a ObjectLock configuration"),
    "ObjectLockConfigurationNotFoundError": (404, "Object Lock configuration does not exist for this bucket"),
    "OwnershipControlsNotFoundError": (404, "The bucket ownership controls were not found"),
    "ServerSideEncryptionConfigurationNotFoundError": (
        404,
        "The server side encryption configuration was not found",
    ),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (
        409,
        "The requested bucket name is not available. The bucket namespace is shared by all users of the system. "
        "Please select a different name and try again.",
    ),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IllegalVersioningConfigurationException": (
        400,
        "The Versioning element must be specified",
    ),
    "IncompleteBody": (
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
    ),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part might not have been uploaded, "
        "or the specified entity tag might not have matched the part's entity tag.",
    ),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
    ),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedACLError": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingRequestBodyError": (400, "Request Body is empty"),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchUpload": (
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed.",
    ),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented"),
    "NotModified": (304, "Not Modified"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "ServiceUnavailable": (503, "Reduce your request rate."),
    "UnresolvableGrantByEmailAddress": (
        400,
        "The email address you provided does not match any account on record.",
    ),
    "XAmzContentSHA256Mismatch": (
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
}


class S3Error(Exception):
    """An S3 error response: code, message, HTTP status, and extra elements for the XML body."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        status: int | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        **extra: str,
    ):
        default_status, default_message = ERRORS.get(code, (400, code))
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.extra = extra
        self.headers = list(headers)
        super().__init__(f"{code}: {self.message}")


def render_error(err: S3Error, resource: str, request_id: str, host_id: str) -> bytes:
    parts = [f"<Code>{escape(err.code)}</Code><Message>{escape(err.message)}</Message>"]
    for name, value in err.extra.items():
        parts.append(f"<{name}>{escape(value)}</{name}>")
    parts.append(
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId><HostId>{host_id}</HostId>"
    )
    return document("Error", "".join(parts), ns=False)
