"""The ODE solvers, shared by every family: Butcher tableaus and the Runge-Kutta loop,
Dormand-Prince 5(4) (docs/solvers.md, docs/adaptive.md)."""
