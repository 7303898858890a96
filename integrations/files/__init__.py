from .action import ParseFile, StoreFile

ACTIONS = (ParseFile, StoreFile)
CREDENTIAL_KINDS = ()
