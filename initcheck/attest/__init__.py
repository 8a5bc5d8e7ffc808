"""Signed audit attestations (issue 26): what ``initcheck check --attest`` writes and ``initcheck verify`` checks.

- ``statement``: the in-toto Statement v1 built from a finished report (subjects: every file of
  ``target.files`` with its SHA-256; predicate: the verdict, findings, rule pack, versions, probe);
- ``dsse``: keys, fingerprints and the DSSE envelope that signs a statement;
- ``write``: the check side (read the key before the scan, bind the statement to the reports, write it);
- ``verify``: the buyer's side (signature, the bytes re-hashed, files added, removed or changed);
- ``command``: the ``initcheck verify`` command.

It uses the pipeline (``initcheck.api.run``) and is not woven into it: the one thing the scan does
for it is hash every file of the table while the statistics read the same bytes (``Settings.hash_all``).
"""
