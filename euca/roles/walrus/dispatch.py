"""One table from endpoint class to handler, and the dispatch that decides access and runs the handler.

Every handler is `async (service, call, endpoint) -> Response`, with `endpoint` of the class it is listed
under. HeadObject shares GetObject's handler (it answers the same headers without the body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from euca.core.http import Response
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import (
    bucket_config,
    buckets,
    cors,
    listings,
    multipart,
    object_lock,
    objects,
    settings,
)
from euca.roles.walrus.access import check_expected_owner, decide
from euca.roles.walrus.attributes import get_object_attributes
from euca.roles.walrus.authorize import authorise
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.post_object import post_object
from euca.roles.walrus.service import WalrusService

Handler = Callable[[WalrusService, S3Call, Any], Awaitable[Response]]

HANDLERS: dict[type, Handler] = {
    # the service and buckets
    s3.ListBuckets: buckets.list_buckets,
    s3.CreateBucket: buckets.create_bucket,
    s3.HeadBucket: buckets.head_bucket,
    s3.DeleteBucket: buckets.delete_bucket,
    s3.GetBucketLocation: buckets.get_bucket_location,
    # bucket configuration
    s3.GetBucketVersioning: bucket_config.get_bucket_versioning,
    s3.PutBucketVersioning: bucket_config.put_bucket_versioning,
    s3.GetBucketAcl: bucket_config.get_bucket_acl,
    s3.PutBucketAcl: bucket_config.put_bucket_acl,
    s3.GetBucketTagging: bucket_config.get_bucket_tagging,
    s3.PutBucketTagging: bucket_config.put_bucket_tagging,
    s3.DeleteBucketTagging: bucket_config.delete_bucket_tagging,
    s3.PutBucketPolicy: bucket_config.put_bucket_policy,
    s3.GetBucketPolicy: bucket_config.get_bucket_policy,
    s3.DeleteBucketPolicy: bucket_config.delete_bucket_policy,
    s3.GetBucketPolicyStatus: bucket_config.get_bucket_policy_status,
    s3.PutPublicAccessBlock: bucket_config.put_public_access_block,
    s3.GetPublicAccessBlock: bucket_config.get_public_access_block,
    s3.DeletePublicAccessBlock: bucket_config.delete_public_access_block,
    s3.PutBucketCors: bucket_config.put_bucket_cors,
    s3.GetBucketCors: bucket_config.get_bucket_cors,
    s3.DeleteBucketCors: bucket_config.delete_bucket_cors,
    s3.Preflight: cors.preflight,
    # listings
    s3.ListObjects: listings.list_objects,
    s3.ListObjectsV2: listings.list_objects_v2,
    s3.ListObjectVersions: listings.list_object_versions,
    s3.ListMultipartUploads: listings.list_multipart_uploads,
    # objects
    s3.PutObject: objects.put_object,
    s3.PostObject: post_object,
    s3.GetObject: objects.get_object,
    s3.HeadObject: objects.get_object,
    s3.DeleteObject: objects.delete_object,
    s3.DeleteObjects: objects.delete_objects,
    s3.CopyObject: objects.copy_object,
    s3.GetObjectAcl: objects.get_object_acl,
    s3.PutObjectAcl: objects.put_object_acl,
    s3.GetObjectTagging: objects.get_object_tagging,
    s3.PutObjectTagging: objects.put_object_tagging,
    s3.DeleteObjectTagging: objects.delete_object_tagging,
    # multipart uploads
    s3.CreateMultipartUpload: multipart.create_multipart_upload,
    s3.UploadPart: multipart.upload_part,
    s3.UploadPartCopy: multipart.upload_part_copy,
    s3.CompleteMultipartUpload: multipart.complete_multipart_upload,
    s3.AbortMultipartUpload: multipart.abort_multipart_upload,
    s3.ListParts: multipart.list_parts,
    # bucket settings (issue 11)
    s3.PutBucketLifecycleConfiguration: settings.put_bucket_lifecycle,
    s3.GetBucketLifecycleConfiguration: settings.get_bucket_lifecycle,
    s3.DeleteBucketLifecycle: settings.delete_bucket_lifecycle,
    s3.PutBucketOwnershipControls: settings.put_ownership_controls,
    s3.GetBucketOwnershipControls: settings.get_ownership_controls,
    s3.DeleteBucketOwnershipControls: settings.delete_ownership_controls,
    s3.PutObjectLockConfiguration: settings.put_object_lock_configuration,
    s3.GetObjectLockConfiguration: settings.get_object_lock_configuration,
    s3.PutBucketLogging: settings.put_bucket_logging,
    s3.GetBucketLogging: settings.get_bucket_logging,
    s3.PutBucketEncryption: settings.put_bucket_encryption,
    s3.GetBucketEncryption: settings.get_bucket_encryption,
    s3.DeleteBucketEncryption: settings.delete_bucket_encryption,
    # an object version's lock, and its attributes
    s3.PutObjectRetention: object_lock.put_object_retention,
    s3.GetObjectRetention: object_lock.get_object_retention,
    s3.PutObjectLegalHold: object_lock.put_object_legal_hold,
    s3.GetObjectLegalHold: object_lock.get_object_legal_hold,
    s3.GetObjectAttributes: get_object_attributes,
}


async def dispatch(svc: WalrusService, call: S3Call, endpoint: Any) -> Response:
    """Run the endpoint's handler, under the access decision of its bucket's policy and public access block
    (a bucket with neither, most of them, keeps the call's ACL_ONLY: no evaluation, no allocation)."""
    handler = HANDLERS.get(type(endpoint))
    if handler is None:
        what = endpoint.what if isinstance(endpoint, s3.Unsupported) else type(endpoint).__name__
        raise S3Error("NotImplemented", f"Walrus does not implement {what}")
    bucket = getattr(endpoint, "bucket", None)
    if "x-amz-expected-bucket-owner" in call.request.headers:
        await check_expected_owner(svc, call, bucket)
    if bucket is not None:
        rules = svc.policies.get(bucket)
        if rules is not None:
            call.access = await decide(svc, call, endpoint, bucket, rules)
    await authorise(svc, call, endpoint)  # the caller's identity policies (issue 12)
    return await handler(svc, call, endpoint)
