"""Channel names → signal kind → SleepFM modality.

One place decides where a channel goes. Names are matched after normalisation (case, spaces and
separators ignored, so ``EEG Fpz-Cz``, ``eeg_fpz_cz`` and ``FPZ CZ`` are the same channel). A name is
first looked up in the alias table, then tried against a few montage patterns (10-20 electrode pairs,
EOG/EMG/ECG prefixes). A channel that matches nothing is *unplaced*: callers skip and report it.

Kinds and modalities follow SleepFM: BAS (brain activity) = EEG + EOG, ECG, EMG (chin and legs),
RESP = airflow, pressure, effort belts, SpO2, pulse/heart rate, PPG and snore.

The OSF backbone takes 12 fixed leads (:data:`OSF_LEADS`); :func:`osf_lead_slots` says which
channel of a recording fills each. A published model's own channel table (the SleepFM reference's
``channel_groups.json``: exact names per modality) joins the alias table through
:func:`channel_group_aliases`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .exceptions import InvalidParameterError
from .utils import check_option

MODALITIES: tuple[str, ...] = ("BAS", "ECG", "EMG", "RESP")

KIND_TO_MODALITY: dict[str, str] = {
    "eeg": "BAS",
    "eog": "BAS",
    "ecg": "ECG",
    "emg": "EMG",
    "resp": "RESP",
    "spo2": "RESP",
    "hr": "RESP",
    "ppg": "RESP",
    "snore": "RESP",
}

_ELECTRODE = r"(?:fp|af|f|fc|ft|c|cp|t|tp|p|po|o|a|m)(?:[0-9]{1,2}|z)"

# Exact aliases (normalised name → kind). Prefixes like "eeg" are handled by the patterns below.
_ALIASES: dict[str, str] = {
    # EOG
    "e1": "eog", "e2": "eog", "loc": "eog", "roc": "eog", "eogl": "eog", "eogr": "eog",
    "eogleft": "eog", "eogright": "eog", "eoghorizontal": "eog", "eogvertical": "eog",
    "leog": "eog", "reog": "eog", "e1m2": "eog", "e2m1": "eog", "e1m1": "eog", "e2m2": "eog",
    "loca2": "eog", "roca1": "eog", "loca1": "eog", "roca2": "eog", "e1a2": "eog", "e2a1": "eog",
    # EMG
    "chin": "emg", "chin1": "emg", "chin2": "emg", "chin3": "emg", "chin12": "emg", "chin1chin2": "emg",
    "emgchin": "emg", "chinemg": "emg", "emgsubmental": "emg", "submental": "emg", "menton": "emg",
    "leg": "emg", "legl": "emg", "legr": "emg", "lleg": "emg", "rleg": "emg", "leftleg": "emg",
    "rightleg": "emg", "lat": "emg", "rat": "emg", "lleg1": "emg", "rleg1": "emg", "llegemg": "emg",
    "rlegemg": "emg", "emglat": "emg", "emgrat": "emg", "legmovement": "emg", "plm": "emg",
    "tibialis": "emg", "ltib": "emg", "rtib": "emg",
    # ECG
    "ecg": "ecg", "ekg": "ecg", "ecg1": "ecg", "ecg2": "ecg", "ecg3": "ecg", "ekg1": "ecg", "ekg2": "ecg",
    "ecgi": "ecg", "ecgii": "ecg", "ecgiii": "ecg", "ecgl": "ecg", "ecgr": "ecg", "ecgla": "ecg",
    "ecgra": "ecg", "ecgll": "ecg", "ecg12": "ecg", "ecg1ecg2": "ecg", "ekg1ekg2": "ecg",
    # respiration
    "airflow": "resp", "flow": "resp", "nasalflow": "resp", "nasal": "resp", "oronasal": "resp",
    "resporonasal": "resp", "oronasalflow": "resp", "thermistor": "resp", "therm": "resp",
    "nasalpressure": "resp", "nasalpres": "resp", "pressure": "resp", "ptaf": "resp", "cannula": "resp",
    "cannulaflow": "resp", "newair": "resp", "nprs": "resp", "pflow": "resp", "cflow": "resp",
    "thor": "resp", "thorax": "resp", "thoracic": "resp", "chest": "resp", "thoraxeffort": "resp",
    "thoraciceffort": "resp", "respthorax": "resp", "effortthor": "resp", "thoracicbelt": "resp",
    "abdo": "resp", "abd": "resp", "abdomen": "resp", "abdominal": "resp", "abdomeneffort": "resp",
    "abdominaleffort": "resp", "respabdomen": "resp", "effortabd": "resp", "abdominalbelt": "resp",
    "sum": "resp", "rip": "resp", "ripsum": "resp", "ripflow": "resp", "respiration": "resp",
    "resp": "resp", "cpapflow": "resp", "cpappressure": "resp", "etco2": "resp", "capno": "resp",
    "vab": "resp", "vth": "resp", "naf": "resp", "naf1": "resp", "thx": "resp", "np": "resp",
    "spo2": "spo2", "sao2": "spo2", "sat": "spo2", "osat": "spo2", "oxygensaturation": "spo2",
    "spo2ox": "spo2",
    "pulse": "hr", "pr": "hr", "hr": "hr", "heartrate": "hr", "pulserate": "hr",
    "pleth": "ppg", "ppg": "ppg", "plethysmogram": "ppg", "plethwave": "ppg",
    "snore": "snore", "snoring": "snore", "mic": "snore", "microphone": "snore", "sound": "snore",
    "sn": "snore",
}

# Patterns over normalised names, tried in order after the alias table.
_PATTERNS: list[tuple[str, str]] = [
    (rf"^(?:eeg)?{_ELECTRODE}(?:{_ELECTRODE})?(?:ref|avg)?$", "eeg"),
    (r"^eeg[a-z0-9]*$", "eeg"),
    (r"^eog[a-z0-9]*$", "eog"),
    (r"^(?:emg|chin|leg)[a-z0-9]*$", "emg"),
    (r"^(?:ecg|ekg)[a-z0-9]*$", "ecg"),
    (r"^resp[a-z0-9]*$", "resp"),
    (r"^(?:spo2|sao2)[a-z0-9]*$", "spo2"),
]

_NORMALISE = re.compile(r"[^a-z0-9]+")


def normalize_name(name: str) -> str:
    """Lower-case a channel name and drop every character that is not a letter or digit."""
    return _NORMALISE.sub("", str(name).lower())


@dataclass(frozen=True)
class ChannelAssignment:
    """Result of placing a recording's channels: ``placed`` maps name → modality."""

    placed: dict[str, str]
    kinds: dict[str, str]
    unplaced: list[str] = field(default_factory=list)

    def by_modality(self) -> dict[str, list[str]]:
        """Channel names grouped by modality, in :data:`MODALITIES` order (absent ones left out)."""
        out: dict[str, list[str]] = {}
        for mod in MODALITIES:
            names = [n for n, m in self.placed.items() if m == mod]
            if names:
                out[mod] = names
        return out


class ChannelMap:
    """Map channel names to kinds (``eeg``, ``eog``, ``emg``…) and SleepFM modalities.

    Parameters
    ----------
    aliases : dict of str to str, optional
        Extra ``{channel name: kind or modality}`` entries; they take precedence over the built-in
        table. A value may be a kind (``"eog"``) or a modality (``"BAS"``).
    ignore : iterable of str, optional
        Channel names never placed (for example a known-bad lead).

    Examples
    --------
    >>> cmap = ChannelMap()
    >>> cmap.modality("EEG Fpz-Cz"), cmap.modality("Nasal Pressure"), cmap.modality("Temp rectal")
    ('BAS', 'RESP', None)
    """

    def __init__(self, aliases: dict[str, str] | None = None, *, ignore=()):
        self._aliases = dict(_ALIASES)
        for name, target in (aliases or {}).items():
            self._aliases[normalize_name(name)] = self._as_kind(name, target)
        self._ignore = {normalize_name(n) for n in ignore}

    @staticmethod
    def _as_kind(name: str, target: str) -> str:
        target = str(target)
        if target in MODALITIES:
            # A modality given directly: use the first kind of that modality.
            return next(k for k, m in KIND_TO_MODALITY.items() if m == target)
        check_option(f"alias target of {name!r}", target.lower(), list(KIND_TO_MODALITY) + list(MODALITIES))
        return target.lower()

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ChannelMap":
        """Built-in table extended by a YAML file with ``aliases: {name: kind}`` and ``ignore: [names]``.

        Raises
        ------
        InvalidParameterError
            The file is missing, is not valid YAML, or holds other keys or values.
        """
        path = Path(path)
        if not path.is_file():
            raise InvalidParameterError(f"{path}: channel map not found; pass a YAML file with "
                                        "'aliases: {name: kind}' and/or 'ignore: [names]'.")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            raise InvalidParameterError(f"{path}: not valid YAML; fix the channel map.") from None
        if not isinstance(data, dict) or set(data) - {"aliases", "ignore"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise InvalidParameterError(f"{path}: unknown keys {keys}; expected 'aliases' and/or "
                                        "'ignore'.")
        aliases, ignore = data.get("aliases") or {}, data.get("ignore") or ()
        if not isinstance(aliases, dict) or not isinstance(ignore, (list, tuple)):
            raise InvalidParameterError(f"{path}: 'aliases' must map names to kinds and 'ignore' "
                                        "must list names.")
        try:
            return cls(aliases, ignore=ignore)
        except InvalidParameterError as err:
            raise InvalidParameterError(f"{path}: {err}") from None

    def kind(self, name: str) -> str | None:
        """Signal kind of a channel (``eeg``, ``eog``, ``emg``, ``ecg``, ``resp``, ``spo2``, ``hr``,
        ``ppg``, ``snore``), or ``None`` when the name is not recognised."""
        key = normalize_name(name)
        if not key or key in self._ignore:
            return None
        if key in self._aliases:
            return self._aliases[key]
        for pattern, kind in _PATTERNS:
            if re.match(pattern, key):
                return kind
        return None

    def modality(self, name: str) -> str | None:
        """SleepFM modality of a channel, or ``None`` when it cannot be placed."""
        kind = self.kind(name)
        return KIND_TO_MODALITY[kind] if kind else None

    def assign(self, names) -> ChannelAssignment:
        """Place every channel of a recording; unrecognised names go to ``unplaced``."""
        placed, kinds, unplaced = {}, {}, []
        for name in names:
            kind = self.kind(name)
            if kind is None:
                unplaced.append(name)
            else:
                kinds[name] = kind
                placed[name] = KIND_TO_MODALITY[kind]
        return ChannelAssignment(placed, kinds, unplaced)


DEFAULT_CHANNEL_MAP = ChannelMap()

#: Modality names of other tables that differ from ours.
_MODALITY_SYNONYMS: dict[str, str] = {"EKG": "ECG"}


@dataclass(frozen=True)
class ImportedChannels:
    """A foreign channel table turned into aliases: :func:`channel_group_aliases`'s result.

    Attributes
    ----------
    aliases : dict of str to str
        ``{name: modality}`` for the names the built-in table places elsewhere or not at all
        (pass to :class:`ChannelMap`).
    disagreements : dict of str to tuple of (str, str)
        ``{name: (their modality, ours)}``: names the two tables place differently; theirs wins.
    known : int
        Names the built-in table already places where the foreign one does.
    """

    aliases: dict[str, str]
    disagreements: dict[str, tuple[str, str]]
    known: int


def channel_group_aliases(groups, *, base: ChannelMap = DEFAULT_CHANNEL_MAP) -> ImportedChannels:
    """Aliases that make ``base`` place every channel of a foreign ``{modality: [names]}`` table
    as that table does (matching stays case- and separator-insensitive).

    Raises
    ------
    InvalidParameterError
        A modality that is not one of :data:`MODALITIES` (``EKG`` reads as ``ECG``), a group that
        is not a list of names, or a name placed in two modalities.
    """
    if not isinstance(groups, dict):
        raise InvalidParameterError(f"a channel table must map modalities to lists of names, "
                                    f"got {type(groups).__name__}")
    placed: dict[str, tuple[str, str]] = {}
    for group, names in groups.items():
        modality = _MODALITY_SYNONYMS.get(str(group), str(group))
        check_option("channel-table modality", modality, MODALITIES)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidParameterError(f"channel-table group {group!r} must be a list of names")
        for name in names:
            key = normalize_name(name)
            if key in placed and placed[key][1] != modality:
                raise InvalidParameterError(
                    f"channel-table name {name!r} is placed in both {placed[key][1]} and "
                    f"{modality}; keep it in one group")
            placed[key] = (name, modality)
    aliases, disagreements, known = {}, {}, 0
    for name, modality in placed.values():
        ours = base.modality(name)
        if ours == modality:
            known += 1
            continue
        aliases[name] = modality
        if ours is not None:
            disagreements[name] = (modality, ours)
    return ImportedChannels(aliases, disagreements, known)


# --------------------------------------------------------------------------------------------------
# The 12 leads of the OSF backbone
# --------------------------------------------------------------------------------------------------
#: The input leads of the OSF ViT-1D backbone, in its order (64 Hz, 30 s epochs): ECG, chin EMG,
#: left and right leg EMG, abdomen and thorax belts, nasal pressure, snore, EOG E1-A2 and E2-A1,
#: EEG C3-A2 and C4-A1.
OSF_LEADS: tuple[str, ...] = ("ECG", "EMG_Chin", "EMG_LLeg", "EMG_RLeg", "ABD", "THX", "NP", "SN",
                              "EOG_E1_A2", "EOG_E2_A1", "EEG_C3_A2", "EEG_C4_A1")

#: Signal kind of each OSF lead.
OSF_LEAD_KINDS: dict[str, str] = {
    "ECG": "ecg", "EMG_Chin": "emg", "EMG_LLeg": "emg", "EMG_RLeg": "emg", "ABD": "resp",
    "THX": "resp", "NP": "resp", "SN": "snore", "EOG_E1_A2": "eog", "EOG_E2_A1": "eog",
    "EEG_C3_A2": "eeg", "EEG_C4_A1": "eeg",
}

#: Missing-lead conditions at inference (``sleepfm bench --conditions``): the lead kinds each one
#: removes.
LEAD_CONDITIONS: dict[str, tuple[str, ...]] = {
    "all": (),
    "no_eeg": ("eeg",),
    "no_ecg": ("ecg",),
    "no_resp": ("resp", "snore"),
    "eeg_eog_only": ("ecg", "emg", "resp", "snore"),
}

# Which channels of the lead's kind may fill it: a pattern over the normalised name ("" = any).
_OSF_LEAD_PATTERNS: dict[str, str] = {
    "ECG": "",
    "EMG_Chin": r"chin|submental|menton",
    "EMG_LLeg": r"^(?:emg)?(?:lleg|legl|leftleg|lat|ltib)",
    "EMG_RLeg": r"^(?:emg)?(?:rleg|legr|rightleg|rat|rtib)",
    "ABD": r"abd",
    "THX": r"thor|chest|^vth$|^thx$",
    "NP": r"^(?!cpap).*(?:pres|ptaf|cannula|nprs|pflow)|^np$",
    "SN": "",
    "EOG_E1_A2": r"^(?:eog)?(?:e1|loc|l|left)(?:[am][12])?$|^leog$",
    "EOG_E2_A1": r"^(?:eog)?(?:e2|roc|r|right)(?:[am][12])?$|^reog$",
    "EEG_C3_A2": r"^(?:eeg)?c3(?:[am][12]|ref|avg)?$",
    "EEG_C4_A1": r"^(?:eeg)?c4(?:[am][12]|ref|avg)?$",
}


# Stand-ins for a lead a recording lacks, with ``substitute=True``: another channel of the lead's
# kind whose name fits ("" = any): another EEG derivation for C3/C4, any EOG lead, an airflow
# channel for nasal pressure.
_OSF_LEAD_SUBSTITUTES: dict[str, str] = {
    "EEG_C3_A2": "", "EEG_C4_A1": "", "EOG_E1_A2": "", "EOG_E2_A1": "",
    "NP": r"^(?!cpap).*(?:flow|therm|nasal|naf)",
}


def osf_lead_slots(names, *, channel_map: ChannelMap | None = None,
                   substitute: bool = False) -> tuple[str | None, ...]:
    """The channel of a recording that fills each OSF lead, in :data:`OSF_LEADS` order.

    A channel fills a lead when the alias table gives it the lead's kind and its name fits the lead
    (``C3-M2`` → ``EEG_C3_A2``, ``Leg L`` → ``EMG_LLeg``); OSF's own names are taken first. Each
    channel fills at most one lead, the first that fits, in the recording's order.

    Parameters
    ----------
    names : iterable of str
        The recording's channel names.
    channel_map : ChannelMap, optional
        Alias table to use (default :data:`DEFAULT_CHANNEL_MAP`).
    substitute : bool, default=False
        Fill a lead the recording lacks with a stand-in, when one is left: another EEG
        derivation for C3-A2/C4-A1 (``Fpz-Cz``, ``Pz-Oz``), another EOG lead, an airflow channel
        for nasal pressure. See :func:`osf_lead_substitutes` for which leads were filled so.

    Returns
    -------
    tuple of (str or None)
        12 entries; ``None`` where the recording lacks the lead (mask it).

    Examples
    --------
    >>> osf_lead_slots(["C3-M2", "E1-M2", "EMG chin", "ECG", "Thor", "Nasal Pressure"])[:7]
    ('ECG', 'EMG chin', None, None, None, 'Thor', 'Nasal Pressure')
    >>> osf_lead_slots(["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"], substitute=True)[8:]
    ('EOG horizontal', None, 'EEG Fpz-Cz', 'EEG Pz-Oz')
    """
    cmap = channel_map if channel_map is not None else DEFAULT_CHANNEL_MAP
    names = [str(n) for n in names]
    kinds = {name: cmap.kind(name) for name in names}
    slots: dict[str, str] = {}
    own = {normalize_name(lead): lead for lead in OSF_LEADS}
    for name in names:
        lead = own.get(normalize_name(name))
        if lead is not None and lead not in slots and kinds[name] == OSF_LEAD_KINDS[lead]:
            slots[lead] = name
    tables = [_OSF_LEAD_PATTERNS] + ([_OSF_LEAD_SUBSTITUTES] if substitute else [])
    for table in tables:
        for lead in OSF_LEADS:
            if lead in slots or lead not in table:
                continue
            taken = set(slots.values())
            for name in names:
                if (name not in taken and kinds[name] == OSF_LEAD_KINDS[lead]
                        and re.search(table[lead], normalize_name(name))):
                    slots[lead] = name
                    break
    return tuple(slots.get(lead) for lead in OSF_LEADS)


def osf_lead_substitutes(names, *, channel_map: ChannelMap | None = None) -> dict[str, str]:
    """``{lead: channel}`` of the leads that :func:`osf_lead_slots` fills with a stand-in
    (``substitute=True``) because the recording lacks the lead itself."""
    exact = osf_lead_slots(names, channel_map=channel_map)
    stand_in = osf_lead_slots(names, channel_map=channel_map, substitute=True)
    return {lead: s for lead, e, s in zip(OSF_LEADS, exact, stand_in) if e is None and s is not None}
