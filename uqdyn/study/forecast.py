"""The forecast study: a calibration study on a user's own series or field.

The data (a CSV, netCDF or zarr file, or a real series that statsmodels ships) are read by
:func:`uqdyn.forecast.load_data`, cut into forecast origins by
:func:`uqdyn.forecast.rolling_origins` and split in time: training origins verify before the
first boundary, validation origins start at it and verify before the second, test origins
start at the second (their context may reach back: it is the past at issue time). The
references (climatology, persistence, damped anomaly persistence) and the learned models
(:class:`~uqdyn.models.forecasters.GPForecaster`, :class:`~uqdyn.models.forecasters.NPForecaster`
and its deep ensemble) are fitted on the training origins (the networks select their step
on the validation origins), recalibrated on the validation origins and scored on the test
origins, per lead time, with every score's block-bootstrap interval and each model's skill
against each reference.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from uqdyn._progress import stage
from uqdyn.forecast import (
    Climatology,
    DampedPersistence,
    Origins,
    Persistence,
    load_data,
    rolling_origins,
)
from uqdyn.models.forecasters import ConvCNPForecaster
from uqdyn.predictive import Predictive

from .base import ModelForecast, StudyData
from .config import StudyConfig
from .recipes import RECIPES

__all__ = ["run_forecast", "load_study_series", "split_boundaries", "REFERENCES"]

#: Model names of the reference forecasts (skill is reported against each of them).
REFERENCES = ("climatology", "persistence", "damped_persistence")

#: The recipe (:data:`uqdyn.study.recipes.RECIPES`) of each learned model of the study.
_RECIPE_OF = {"gp": "gp_forecaster", "np": "np_forecaster", "np_ensemble": "np_forecaster"}

_BUILTIN = {
    "statsmodels:elnino": "monthly sea-surface temperature of the El Nino region, 1950-2010",
    "statsmodels:co2": "weekly atmospheric CO2 at Mauna Loa, 1958-2001",
}


def _statsmodels() -> Any:
    try:
        import statsmodels.api as sm
    except ImportError:
        raise ImportError(
            "the real-data studies read series shipped by statsmodels; install it with "
            "`pip install uqdyn[real]` (or `pip install statsmodels`)"
        ) from None
    return sm


def load_study_series(source: str, var: str, time_dim: str, duplicates: str) -> xr.DataArray:
    """The study's data as a checked ``DataArray`` ``(time, *space)``.

    ``source`` is a path (CSV, netCDF, zarr) or a built-in real series:
    ``"statsmodels:elnino"`` (monthly El Nino-region SST, degC, 1950-2010) or
    ``"statsmodels:co2"`` (weekly Mauna Loa CO2, ppm, 1958-2001, with gaps).
    """
    if source == "statsmodels:elnino":
        frame = _statsmodels().datasets.elnino.load_pandas().data
        values = frame.drop(columns="YEAR").to_numpy(dtype=float).reshape(-1)
        start = f"{int(frame['YEAR'].iloc[0])}-01-01"
        index = pd.date_range(start, periods=values.size, freq="MS", name="time")
        da = load_data(pd.Series(values, index=index, name="sst"))
        da.attrs.update({"long_name": "monthly mean sea-surface temperature", "units": "degC"})
        return da
    if source == "statsmodels:co2":
        frame = _statsmodels().datasets.co2.load_pandas().data
        series = frame["co2"].rename("co2")
        series.index.name = "time"
        da = load_data(series)
        da.attrs.update({"long_name": "atmospheric CO2 mole fraction", "units": "ppm"})
        return da
    if not source:
        raise ValueError(
            "data.source is empty; give the data file with --data FILE (CSV, netCDF or zarr)"
        )
    return load_data(source, var or None, dim=time_dim, duplicates=duplicates)  # type: ignore[arg-type]


def split_boundaries(
    times: np.ndarray, fractions: list[float], dates: list[str]
) -> tuple[Any, Any]:
    """The two boundaries (end of training, end of validation) as times of the data.

    ``dates`` (two dates) win over ``fractions`` (train, validation, test; positive, summing
    to 1), which place the boundaries at those fractions of the record.
    """
    if dates:
        if len(dates) != 2:
            raise ValueError(
                f"data.split_dates={dates!r}; expected two dates: the end of the training and "
                "of the validation period"
            )
        if times.dtype.kind != "M":
            return float(dates[0]), float(dates[1])
        b1, b2 = (np.datetime64(pd.Timestamp(d), "ns") for d in dates)
        if not times[0] < b1 < b2 < times[-1]:
            raise ValueError(
                f"data.split_dates={dates!r}; expected two increasing dates inside the data "
                f"({times[0]} to {times[-1]})"
            )
        return b1, b2
    f = [float(v) for v in fractions]
    if len(f) != 3 or min(f) <= 0 or abs(sum(f) - 1.0) > 1e-6:
        raise ValueError(
            f"data.split={fractions!r}; expected three positive fractions (train, validation, "
            "test) summing to 1"
        )
    n = times.size
    return times[int(round(f[0] * (n - 1)))], times[int(round((f[0] + f[1]) * (n - 1)))]


def _leads(values: list[Any]) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            out.append(int(v))
        else:
            out.append(v)
    return out


def _season(setting: str, da: xr.DataArray, time_dim: str) -> str | None:
    """The seasonal cycle to use: ``auto`` picks month / day of year / hour by the sampling."""
    if setting == "none":
        return None
    times = np.asarray(da[time_dim].values)
    if setting != "auto":
        return setting
    if times.dtype.kind != "M" or times.size < 3:
        return None
    step_days = float(np.median(np.diff(times).astype("timedelta64[s]").astype(float))) / 86400
    span_days = float((times[-1] - times[0]).astype("timedelta64[s]").astype(float)) / 86400
    if span_days < 2 * 365:
        return "hour" if step_days < 0.5 and span_days > 3 else None
    return "month" if step_days >= 20 else "dayofyear"


def _origins(
    da: xr.DataArray, d: dict[str, Any], time_dim: str
) -> tuple[Origins, Origins, Origins]:
    leads = _leads(list(d["leads"]))
    context: Any = d["context_span"] if d["context_span"] else int(d["context"])
    times = np.asarray(da[time_dim].values)
    b1, b2 = split_boundaries(times, list(d["split"]), list(d["split_dates"]))
    common = {"context": context, "leads": leads, "stride": int(d["stride"]), "dim": time_dim}
    parts = {}
    for name, kwargs in (
        ("train", {"valid_end": b1}),
        ("validation", {"start": b1, "valid_end": b2}),
        ("test", {"start": b2}),
    ):
        try:
            parts[name] = rolling_origins(da, **common, **kwargs)
        except ValueError as err:
            raise ValueError(
                f"the {name} split has no usable forecast origin ({err}); expected a longer "
                "record, other data.split / data.split_dates, or shorter leads / context"
            ) from None
    for name, part in parts.items():
        if len(part) < 10:
            raise ValueError(
                f"the {name} split has only {len(part)} forecast origin(s); expected at least "
                "10 (change data.split or data.split_dates, or use shorter leads)"
            )
    return parts["train"], parts["validation"], parts["test"]


def _model(
    name: str,
    s: dict[str, Any],
    season: str | None,
    cfg: StudyConfig,
    device: torch.device,
    gridded: bool = False,
) -> Any:
    def clim() -> Climatology:
        return Climatology("seasonal", season=season) if season else Climatology("fixed")  # type: ignore[arg-type]

    if name == "climatology":
        return clim()
    if name == "persistence":
        return Persistence()
    if name == "damped_persistence":
        return DampedPersistence(clim())
    if name in _RECIPE_OF:
        return RECIPES[_RECIPE_OF[name]].build(
            s,
            cfg.seed,
            climatology=clim(),
            season=season,
            gridded=gridded,
            device=device,
            progress=cfg.progress,
        )
    raise ValueError(f"model {name!r} is not available in the forecast study")  # pragma: no cover


def _describe(name: str, model: Any, season: str | None) -> str:
    cycle = f"seasonal cycle by {season}" if season else "no seasonal cycle"
    if name == "climatology":
        return f"climatology of the training period ({cycle}), Gaussian"
    if name == "persistence":
        return "persistence of the last observed value, Gaussian error per lead from training"
    if name == "damped_persistence":
        return f"damped anomaly persistence per lead (AR(1)-type, anomalies from the {cycle})"
    if name == "gp":
        return (
            f"exact GP per lead on the normalised context window ({model.kernel} kernel, "
            f"{model.steps} {model.optimizer} iterations; {model.normalizer})"
        )
    ens = f"deep ensemble of {model.members} " if model.members > 1 else ""
    if isinstance(model, ConvCNPForecaster):
        return (
            f"{ens}ConvCNP on the grid (context frames and their masks as channels, up to "
            f"{model.steps} Adam steps, best validation CRPS kept; {model.normalizer})"
        )
    kind = "attentive CNP" if model.model == "attentive" else "CNP"
    return (
        f"{ens}{kind} per window (width {model.width}, up to {model.steps} Adam steps, best "
        f"validation CRPS kept; {model.normalizer})"
    )


def _date(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="D"))
    return str(value)


def _as_tensor(origins: Origins) -> torch.Tensor:
    return torch.as_tensor(np.asarray(origins.target.values), dtype=torch.float64)


def run_forecast(cfg: StudyConfig, device: torch.device) -> StudyData:
    """Read the data, cut and split the origins, fit ``cfg.models`` and forecast."""
    d = cfg.section("data")
    time_dim = str(d["time_dim"])
    da = load_study_series(str(d["source"]), str(d["var"]), time_dim, str(d["duplicates"]))
    if da.ndim == 1:  # a scalar series: one component named after the variable
        da = da.expand_dims(variable=[str(da.name)], axis=1)
    season = _season(str(d["season"]), da, time_dim)
    train, valid, test = _origins(da, d, time_dim)
    obs_v, obs_t = _as_tensor(valid), _as_tensor(test)
    gridded = len(test.space_dims) >= 2
    forecasts: list[ModelForecast] = []
    for name in cfg.models:
        s = cfg.section(f"model.{name}") if name not in REFERENCES else {}
        start = time.perf_counter()
        model = _model(name, s, season, cfg, device, gridded)
        if name in REFERENCES:
            if cfg.progress:
                stage(f"fitting {name} on {len(train)} training origins")
            model.fit(train)
        else:
            recipe = RECIPES[_RECIPE_OF[name]]
            if cfg.progress:
                stage(
                    f"training {name} ({recipe.label}, {recipe.amount(s)}) on {len(train)} "
                    f"training and {len(valid)} validation origins"
                )
            model = recipe.train(
                model,
                (train, valid),
                s,
                seed=cfg.seed,
                device=device,
                progress=cfg.progress,
                desc=f"training {name}",
            )
        if cfg.progress:
            stage(f"forecasting {name} on {len(valid)} validation and {len(test)} test origins")
        pv: Predictive = model.predict(valid)
        pt: Predictive = model.predict(test)
        seconds = time.perf_counter() - start
        if cfg.progress:
            stage(f"{name}: done in {seconds:.1f} s")
        forecasts.append(ModelForecast(name, pv, pt, seconds, _describe(name, model, season)))
    space_dims = test.space_dims
    kind = "field" if gridded else "vector"
    lead_values = np.asarray(test.target["lead"].values)
    coords: dict[str, Any] = {"lead": lead_values}
    for dim in space_dims:
        coords[dim] = (
            np.asarray(test.target[dim].values)
            if dim in test.target.coords
            else (np.arange(test.target.sizes[dim]))
        )
    source = str(d["source"])
    units = str(da.attrs.get("units", "1"))
    long_name = str(da.attrs.get("long_name", da.name))
    context = np.asarray(test.context.values)
    summary = {
        "data": _BUILTIN.get(source, source),
        "variable": f"{da.name} ({long_name}, {units})",
        "record": f"{_date(da[time_dim].values[0])} to {_date(da[time_dim].values[-1])}, "
        f"{da.sizes[time_dim]} samples, {int(np.isnan(da.values).sum())} missing values",
        "leads": ", ".join(str(v) for v in lead_values) + (" steps" if test.step_leads else ""),
        "context": str(d["context_span"] or f"{int(d['context'])} samples"),
        "seasonal cycle": season or "none",
        "train origins": train.summary(),
        "validation origins": valid.summary(),
        "test origins": test.summary(),
    }
    return StudyData(
        obs_valid=obs_v,
        obs_test=obs_t,
        dims=("origin", "lead", *space_dims),
        coords=coords,
        forecasts=forecasts,
        kind=kind,
        variable=str(da.name),
        long_name=long_name,
        units=units,
        title=f"Forecast study: {da.name} ({_BUILTIN.get(source, 'user data')})",
        context_times=np.asarray(test.context["context"].values, dtype=float),
        context_test=torch.as_tensor(context, dtype=torch.float64),
        summary=summary,
        references=[r for r in REFERENCES if r in cfg.models],
        case_block=0,
        case_values=test.origin_time,
        valid_times=test.valid_time,
        component_names=tuple(str(v) for v in coords[space_dims[0]]) if kind == "vector" else None,
    )
