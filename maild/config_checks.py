"""The features' checks of their config sections, composed above config.py.

config.py is the schema and imports no feature, so the checks that need a feature's own
knowledge (routing rules, SLA tables and calendars, notification audiences, custom fields)
are gathered here. `maild check-config` and `maild run` (and a SIGHUP reload) load through
`load_checked_config`, so they report every problem at once, as before.
"""

from __future__ import annotations

import os

from maild.config import Config, load_config
from maild.crm.fields import check_field_configs
from maild.notify.audiences import check_notify_config
from maild.rules.routing import check_rules
from maild.rules.sla import check_sla_config


def check_features(cfg: Config) -> list[str]:
    """Every problem the features find in `cfg`, without the file name (the loader adds it)."""
    return (check_notify_config(cfg) + check_rules(cfg) + check_segments(cfg) + check_field_configs(cfg)
            + check_sla_config(cfg))


def check_segments(cfg: Config) -> list[str]:
    """Apart, so that the CRM (and its ORM models) is imported only for a config with segments:
    every CLI call checks the config."""
    if not cfg.segments:
        return []
    from maild.crm.contacts import check_segment_configs

    return check_segment_configs(cfg)


def load_checked_config(path: str | os.PathLike[str] | None) -> Config:
    """load_config with the features' checks: raises ConfigError listing the schema's and the
    features' problems together. None: the embedded defaults, as load_config."""
    return load_config(path, checks=check_features)
