"""Files kept outside the database: uploads, files steps write, files ``file.store`` keeps.

- ``storage``: the storage (Django's storage API: local disk or S3 through
  django-storages, ``POTAFLOW_FILE_STORAGE``) and its keys.
- ``services``: writing a file (row first, then bytes), quota, access for
  actions, deletion of detached and abandoned files (the pruner calls it).
- ``uploads``: the webhook's multipart upload handler, streaming each file to
  the storage as it arrives, within its limits.
- ``links``: signed, expiring download links.

The rows are ``workflows.models.RunFile``; names are shown, never used as paths.
"""
