"""maild's vocabulary: the words every layer speaks, importing nothing else of maild.

Stages, priorities and case types (stages.py), what a case looks like to a decision and the
changes a decision plans (case.py), the inbound mail as content and where its raw bytes are
(message.py), what the pipeline did with a mail (outcome.py), and the one exception hierarchy
(errors.py). It sits below everything, so storage, rules, threading and the adapters can all
share these types without importing one another (tests/unit/test_import_rules.py holds it).
"""
