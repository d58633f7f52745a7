global using FloatView = ILGPU.ArrayView<float>;
global using IntView = ILGPU.ArrayView<int>;
