"""The campaigns' days (their 24h and 30d windows), kept between reads: a read costs the days written since.

Campaign hours are kept in one hash per campaign and day (streams/keys.py `cc:`/`cz:`). The coarse windows reach
31 days back, so reading every day at every snapshot would cost 32 hashes per campaign. The monitor's group cache
(monitor/groupcache.py) follows the writes (`gdirty` names the campaigns whose hours an apply wrote) and hands
them in as `reread`; the days of the other campaigns are kept. Days that ended before `settled_before_ms` can no
longer change (any event for them is late) and are kept for the store generation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streams import campaigns
from streams.queuestore import CampaignRow, QueueStore, Sums, campaign_row, coarse_days

Day = tuple[str, int]  # (campaign, or campaigns.FLOOR; day since the epoch)


class CampaignDays:
    """Each campaign's day hashes as last read, and rows built from them."""

    def __init__(self, reads: QueueStore) -> None:
        self.reads = reads
        self._generation: str | None = None
        self._settled: dict[Day, dict[int, Sums]] = {}  # days that can no longer change, for the generation
        self._start: int | None = None  # the first day of the coarse windows when _settled was last pruned
        self._moving: dict[Day, dict[int, Sums]] = {}  # days that still may (today, yesterday)
        self._complete: dict[str, tuple[int, int, str | None]] = {}  # subject -> the days it holds all of

    async def read(
        self,
        now_ms: int,
        campaign_names: Sequence[str],
        *,
        reread: set[str],
        settled_before_ms: int,
        generation: str | None,
        coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S,
    ) -> set[str]:
        """Read the days of the campaigns (and the floor) that a row at `now_ms` needs and are not kept; the
        subjects some day of which was read.

        `reread`: the subjects whose hours were written since the last read (campaigns.FLOOR for the floor)."""
        days = coarse_days(now_ms, coarse)
        subjects = [*sorted(campaign_names), campaigns.FLOOR]
        if generation != self._generation:
            self._settled, self._moving, self._complete, self._generation = {}, {}, {}, generation
        if days.start != self._start:  # a day left the 30 days: let its settled hashes go (once a day)
            self._settled, self._start = {k: v for k, v in self._settled.items() if k[1] >= days.start}, days.start
        self._moving = {k: v for k, v in self._moving.items() if k[0] not in reread and k[1] >= days.start}
        span = (days.start, days.stop, generation)
        wanted = [
            (sub, day)
            for sub in subjects
            if sub in reread or self._complete.get(sub) != span  # a subject holding every day needs no look
            for day in days
            if (sub, day) not in self._settled and (sub, day) not in self._moving
        ]
        for (sub, day), hours in (await self.reads.campaign_days(wanted)).items():
            settled = (day + 1) * 86_400_000 < settled_before_ms
            (self._settled if settled else self._moving)[(sub, day)] = hours
        self._complete = dict.fromkeys(subjects, span)  # only once read: a failed read leaves them to the next
        return {sub for sub, _day in wanted}

    def row(
        self,
        subject: str,
        fine: dict[int, Sums],
        now_ms: int,
        windows_s: Sequence[int],
        coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S,
    ) -> CampaignRow:
        """A campaign's row (the floor's for campaigns.FLOOR) from its rolling sums `fine` and its days as last
        read (`read`, at the same now or in the same hour)."""
        days = coarse_days(now_ms, coarse)
        kept = [self._settled.get((subject, day)) or self._moving.get((subject, day), {}) for day in days]
        return campaign_row(subject, fine, kept, now_ms, windows_s, coarse)
