"""The campaigns' days (their 24h and 30d windows), kept between reads: a read costs the days written since.

Campaign hours are kept in one hash per campaign and day (streams/keys.py `cc:`/`cz:`). The coarse windows reach
31 days back, so reading every day at every snapshot would cost 32 hashes per campaign. The monitor's group cache
(monitor/groupcache.py) follows the writes (`gdirty` names the campaigns whose hours an apply wrote) and hands
them in as `reread`; the days of the other campaigns are kept. Days that ended before `settled_before_ms` can no
longer change (any event for them is late) and are kept for the store generation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streams import campaigns
from streams.queuestore import CampaignRow, QueueStore, Sums, campaign_row, coarse_days

Day = tuple[str, int]  # (campaign, or campaigns.FLOOR; day since the epoch)


class CampaignDays:
    """Each campaign's day hashes as last read, and the rows built from them."""

    def __init__(self, reads: QueueStore) -> None:
        self.reads = reads
        self._generation: str | None = None
        self._settled: dict[Day, dict[int, Sums]] = {}  # days that can no longer change, for the generation
        self._start: int | None = None  # the first day of the coarse windows when _settled was last pruned
        self._moving: dict[Day, dict[int, Sums]] = {}  # days that still may (today, yesterday)
        self._complete: dict[str, tuple[int, int, str | None]] = {}  # subject -> the days it holds all of
        self._day_reads: dict[str, int] = {}  # subject -> its day reads so far (a row is as they were)
        self._rows: dict[str, tuple[object, tuple[Any, ...], CampaignRow]] = {}  # subject -> (token, key, row)

    async def read(
        self,
        now_ms: int,
        campaign_names: Sequence[str],
        *,
        reread: set[str],
        settled_before_ms: int,
        generation: str | None,
        coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S,
    ) -> None:
        """Read the days of the campaigns (and the floor) that a build at `now_ms` needs and are not kept.

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
            self._day_reads[sub] = self._day_reads.get(sub, 0) + 1
            settled = (day + 1) * 86_400_000 < settled_before_ms
            (self._settled if settled else self._moving)[(sub, day)] = hours
        self._complete = dict.fromkeys(subjects, span)  # only once read: a failed read leaves them to the next

    def rows(
        self,
        now_ms: int,
        windows_s: Sequence[int],
        fine: Mapping[str, dict[int, Sums]],
        *,
        generation: str | None,
        tokens: Mapping[str, object],
        coarse: Mapping[str, int] = campaigns.COARSE_WINDOWS_S,
    ) -> tuple[list[CampaignRow], CampaignRow]:
        """The campaigns of `fine` (their rolling sums) and the floor, with their coarse windows at `now_ms`, from
        the days as last read (`read`, at the same now or in the same hour).

        `tokens`: per campaign, an object that is the same while its fine sums are; a campaign whose token, days
        and hour of now are as at the last call gets the same row object back (the snapshot reuses its entry).
        """
        days = coarse_days(now_ms, coarse)
        subjects = [*sorted(fine), campaigns.FLOOR]
        held_rows, self._rows = self._rows, {}
        out: list[CampaignRow] = []
        for sub in subjects:
            token = tokens.get(sub)
            key = (tuple(windows_s), campaigns.coarse_of(now_ms), self._day_reads.get(sub), generation)
            held = held_rows.get(sub)
            if held is None or held[0] is not token or held[1] != key:
                kept = [self._settled.get((sub, day)) or self._moving.get((sub, day), {}) for day in days]
                held = (token, key, campaign_row(sub, fine.get(sub, {}), kept, now_ms, windows_s, coarse))
            self._rows[sub] = held
            out.append(held[2])
        return out[:-1], out[-1]
