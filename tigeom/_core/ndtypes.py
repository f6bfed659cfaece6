"""Taichi ndarray annotations shared by the kernel modules (imported only by them: defining
these imports Taichi)."""

import taichi as ti

nd1 = ti.types.ndarray(ndim=1)
nd2 = ti.types.ndarray(ndim=2)
nd3 = ti.types.ndarray(ndim=3)
nd4 = ti.types.ndarray(ndim=4)
nd_i32_1 = ti.types.ndarray(dtype=ti.i32, ndim=1)
nd_i32_2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
nd_i32_3 = ti.types.ndarray(dtype=ti.i32, ndim=3)
