"""The tolerance policy as a resource: which YAML file routes images, read fresh on every run."""

from __future__ import annotations

import os

import dagster as dg

from ml.policy import Policy, default_policy_path, load_policy


class TolerancePolicy(dg.ConfigurableResource):
    """Path of the YAML tolerance policy; empty means the packaged default policy."""

    path: str = ""

    @classmethod
    def from_env(cls) -> "TolerancePolicy":
        """Configure from HITL_POLICY (a YAML file path)."""
        return cls(path=os.environ.get("HITL_POLICY", ""))

    def load(self) -> Policy:
        """Parse and validate the policy file (PolicyError naming the field on a bad one)."""
        return load_policy(self.path or default_policy_path())
