"""Identity resolution: which profile a message belongs to, and which profiles it merges.

The rules, in order:

- ``alias`` says two identities are one person: the profile of ``previousId`` merges into the
  profile of ``userId`` (explicit, so even two known users merge here, and it is logged).
- A message with a ``userId`` belongs to that user's profile. If the user has none yet, it adopts
  the anonymous profile its other identities point to, else a new profile starts. Anonymous
  profiles among its identities merge into it; a profile that belongs to a *different* user is
  never merged: the device's anonymous id moves to this user from now on, and that is logged.
- A message without a ``userId`` belongs to the profile of its identities (anonymous id first);
  when they point to several profiles, anonymous ones merge into the known one (or the oldest).
- A strong identity (email, wallet, external id) that belongs to another known user stays there.

``Resolver`` keeps a per-batch view of links and profile owners, so later messages of a batch see
what earlier ones did; the caller writes the resulting links, merges and applies to Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from collector import wire

__all__ = ["Plan", "Resolver"]

log = logging.getLogger("kairos.identity")

_WEAK = ("anonymous_id:",)


@dataclass
class Plan:
    """What to do for one message."""

    profile: str
    merges: list[str] = field(default_factory=list)  # profiles to fold into ``profile``, in order
    links: list[str] = field(default_factory=list)  # identities to point at ``profile``


class Resolver:
    """Decides, message by message, with ``links`` (identity -> profile) and ``owners``
    (profile -> user id or None) as known at the start of the batch."""

    def __init__(self, links: dict[str, str], owners: dict[str, str | None]):
        self.links = links
        self.owners = owners

    def plan(self, msg: wire.Message, identities: list[str], new_id: Callable[[], str]) -> Plan:
        """The plan for ``msg``; ``new_id()`` names a profile if one must be created."""
        links = self.links
        first = links.get(identities[0]) if identities else None
        if first is not None and type(msg) is not wire.Alias:
            # The common case: every identity already points to the same profile.
            if all(links.get(i) == first for i in identities[1:]):
                return Plan(first)
        if type(msg) is wire.Alias:
            plan = self._alias(msg, identities, new_id)
        else:
            plan = self._message(msg, identities, new_id)
        self._record(plan, msg)
        return plan

    def _owner(self, pid: str) -> str | None:
        return self.owners.get(pid)

    def _message(self, msg: wire.Message, identities: list[str], new_id: Callable[[], str]) -> Plan:
        user = f"user_id:{msg.user_id}" if msg.user_id is not None else None
        known = {i: self.links[i] for i in identities if i in self.links}
        if user is not None:
            target = known.get(user)
            others = [pid for i, pid in known.items() if i != user and pid != target]
            if target is None:
                adoptable = [pid for pid in others if self._owner(pid) is None]
                target = adoptable[0] if adoptable else new_id()
            merges = []
            for pid in dict.fromkeys(others):
                if pid == target:
                    continue
                owner = self._owner(pid)
                if owner is None:
                    merges.append(pid)
                elif owner != msg.user_id:
                    log.warning(
                        "identity belongs to another user; not merging",
                        extra={"user": msg.user_id, "other_user": owner, "profile": pid},
                    )
            return Plan(target, merges, self._linkable(identities, target, msg.user_id))
        pids = list(dict.fromkeys(known.values()))
        if not pids:
            return Plan(new_id(), [], list(identities))
        owned = [pid for pid in pids if self._owner(pid) is not None]
        anonymous = known.get(f"anonymous_id:{msg.anonymous_id}")
        target = owned[0] if owned else (anonymous or pids[0])
        merges = [pid for pid in pids if pid != target and self._owner(pid) is None]
        owner = self._owner(target)
        return Plan(target, merges, self._linkable(identities, target, owner))

    def _alias(self, msg: wire.Alias, identities: list[str], new_id: Callable[[], str]) -> Plan:
        user = f"user_id:{msg.user_id}"
        previous = [
            i
            for i in (f"user_id:{msg.previous_id}", f"anonymous_id:{msg.previous_id}")
            if i in self.links
        ]
        target = self.links.get(user)
        sources = list(dict.fromkeys(self.links[i] for i in previous))
        if target is None:
            target = sources.pop(0) if sources else new_id()
        merges = [pid for pid in sources if pid != target]
        for pid in merges:
            if self._owner(pid) not in (None, msg.user_id):
                log.info(
                    "alias merges two known users",
                    extra={"from_user": self._owner(pid), "into_user": msg.user_id},
                )
        links = [user, *(previous or [f"anonymous_id:{msg.previous_id}"])]
        return Plan(target, merges, links)

    def _linkable(self, identities: list[str], target: str, user_id: str | None) -> list[str]:
        links = []
        for identity in identities:
            current = self.links.get(identity)
            if current == target:
                continue
            strong = not identity.startswith(_WEAK) and not identity.startswith("user_id:")
            if strong and current is not None:
                owner = self._owner(current)
                if owner is not None and owner != user_id:
                    log.warning(
                        "identity already belongs to another user; left there",
                        extra={"identity": identity.partition(":")[0], "profile": current},
                    )
                    continue
            links.append(identity)
        return links

    def _record(self, plan: Plan, msg: wire.Message) -> None:
        for merged in plan.merges:
            for identity, pid in list(self.links.items()):
                if pid == merged:
                    self.links[identity] = plan.profile
            if self.owners.get(plan.profile) is None:
                self.owners[plan.profile] = self.owners.get(merged)
        for identity in plan.links:
            self.links[identity] = plan.profile
        if msg.user_id is not None and self.owners.get(plan.profile) is None:
            self.owners[plan.profile] = str(msg.user_id)
        self.owners.setdefault(plan.profile, None)
